"""One pod interface: a veth pair between the node and the pod, a host route on each side.

Per attachment and per address (IPv4 and IPv6 alike; ``ip`` equivalents, node side first)::

    ip link add lxcXXXXXXXXXXX type veth peer name eth0 netns <pod>   # peer born in the pod netns
    ip link set lxcXXXXXXXXXXX up
    ip route replace 10.244.1.5/32 dev lxcXXXXXXXXXXX scope link proto 201
    # inside the pod
    ip link set lo up; ip link set eth0 up
    ip addr add 10.244.1.5/32 dev eth0
    ip route replace 10.244.1.1/32 dev eth0 scope link proto 201
    ip route replace default via 10.244.1.1 dev eth0 mtu <route_mtu> proto 201

The gateway comes with the address from IPAM (the node's router IP of that pod CIDR, a local
address of the node on ``podnet_host``), so the node answers the pod's ARP for it on the veth. IPv6
answers neighbour solicitations only for addresses of the receiving link, so an IPv6 gateway
also gets ``ip -6 neigh replace proxy <gateway> dev lxc...`` (with ``proxy_ndp`` on, no delay).
DEL unplugs at once and deletes later (``retire_endpoint``, then ``purge_retired``)::

    ip link set lxcXXXXXXXXXXX down                       # every route through it goes now
    ip -n <pod> link set eth0 down name lxz<index>        # the pod's name is free again
    ip link set lxcXXXXXXXXXXX name lxz<index> group <RETIRED_GROUP>
    ip link del group <RETIRED_GROUP>                     # later, in one batch for many pods

Requests go through ``kernel.rtnl`` (a few microseconds each, not pyroute2's ~0.2 ms).
``add_endpoint`` undoes what it made if a later step fails. Errors are ``EndpointError``s; the
CNI handler maps them to CNI codes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import is_exists, is_gone
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import route as kroute
from podnet.datapath.kernel import sysctl as ksysctl
from podnet.datapath.kernel.rtnl import Link, Rtnl
from podnet.datapath.objects import SCOPE_LINK, Route, default_route, host_prefix
from podnet.datapath.podns import EndpointError as EndpointError
from podnet.datapath.podns import NetnsNotFoundError as NetnsNotFoundError
from podnet.datapath.podns import PodNetns as PodNetns
from podnet.datapath.podns import checked_fd
from podnet.datapath.podns import find as find
from podnet.datapath.podns import opened as opened
from podnet.model import IPAddress
from podnet.util.netns import netlink_socket_in

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class PodAddress:
    """One address of a pod interface and the gateway its pod routes through."""

    address: Interface  # a host prefix: 10.244.1.5/32, fd00::5/128
    gateway: IPAddress

    def __post_init__(self) -> None:
        if self.address.version != self.gateway.version:
            raise ValueError(f"gateway {self.gateway} of {self.address} is of the other IP family")

    @property
    def family(self) -> int:
        return self.address.version


@dataclass(frozen=True)
class EndpointInfo:
    """What the kernel holds for one attachment, as the CNI result reports it."""

    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_ifname: str
    pod_ifindex: int
    pod_mac: str
    addresses: tuple[PodAddress, ...]
    netns_path: str


def pod_routes(ifname: str, address: PodAddress, route_mtu: int, default: bool = True) -> tuple[Route, ...]:
    """The pod's on-link route to its gateway and, for the attachment that owns it, its default
    route through it."""
    on_link = Route(dst=host_prefix(address.gateway), dev=ifname, scope=SCOPE_LINK)
    if not default:
        return (on_link,)
    return on_link, Route(
        dst=default_route(address.family), dev=ifname, gateway=address.gateway, mtu=route_mtu
    )


S = TypeVar("S", IPRoute, Rtnl)


def _pyroute2(fd: int | None) -> IPRoute:
    return IPRoute() if fd is None else netlink_socket_in(fd)


@contextlib.contextmanager
def _in_host(host_netns: str | None, make: Callable[[int | None], S]) -> Iterator[S]:
    """A socket made by ``make`` in the node's namespace (``/run/netns/<host_netns>``, or this one)."""
    if host_netns:
        fd = os.open(f"/run/netns/{host_netns}", os.O_RDONLY | os.O_CLOEXEC)  # never created here
        try:
            sock = make(fd)
        finally:
            os.close(fd)
    else:
        sock = make(None)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def _in_pod(netns: PodNetns, make: Callable[[int | None], S]) -> Iterator[tuple[int, S]]:
    """The pod namespace's fd (for a veth's ``netns``) and a socket made by ``make`` inside it."""
    fd = checked_fd(netns)
    try:
        sock = make(fd)
    except OSError as exc:
        raise NetnsNotFoundError(f"{netns.label} is not a network namespace: {exc}") from None
    try:
        yield fd, sock
    finally:
        sock.close()


def _host(host_netns: str | None) -> contextlib.AbstractContextManager[IPRoute]:
    """pyroute2 in the node: reads and dumps (CHECK, listing)."""
    return _in_host(host_netns, _pyroute2)


def _host_rtnl(host_netns: str | None) -> contextlib.AbstractContextManager[Rtnl]:
    """The hot path's socket in the node (ADD, DEL)."""
    return _in_host(host_netns, Rtnl)


def _pod(netns: PodNetns) -> contextlib.AbstractContextManager[tuple[int, IPRoute]]:
    return _in_pod(netns, _pyroute2)


def _pod_rtnl(netns: PodNetns) -> contextlib.AbstractContextManager[tuple[int, Rtnl]]:
    return _in_pod(netns, Rtnl)


def _peer_of(host: Rtnl, pod: Rtnl, host_ifname: str, ifname: str) -> Link | None:
    """``ifname`` in the pod when it is the veth peer of ``host_ifname`` on the node, else None."""
    host_link, pod_link = host.get_link(host_ifname), pod.get_link(ifname)
    if host_link is None or pod_link is None:
        return None
    if pod_link.kind != "veth" or pod_link.peer_index != host_link.index:
        return None
    return pod_link


def add_endpoint(
    host_netns: str | None,
    pod_netns: PodNetns,
    container_id: str,
    ifname: str,
    addresses: Sequence[PodAddress],
    route_mtu: int,
    owns_default: bool = True,
    gso: tuple[int | None, int | None] = (None, None),
) -> EndpointInfo:
    """Wire (or re-wire) one pod interface; idempotent; nothing made stays behind on failure.
    Only the attachment that owns the pod's default route (``owns_default``) installs it, so a
    second attachment (``net1``) never takes it from the first, and its DEL never removes it.
    ``gso``: the (IPv6, IPv4) GSO/GRO sizes a new veth gets on both ends (BIG TCP)."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with (
            _host_rtnl(host_netns) as host,
            _pod_rtnl(pod_netns) as (fd, pod),
            contextlib.ExitStack() as undo,
        ):
            link_mtu = route_mtu if route_mtu > VETH_MTU else None  # jumbo underlays (a cloud VPC's 9001)
            fresh = _make_pair(host, pod, fd, host_ifname, ifname, pod_netns.label, link_mtu, gso)
            if fresh:
                undo.callback(_delete_named, host, host_ifname)
            host_link, pod_link = host.get_link(host_ifname), pod.get_link(ifname)
            if host_link is None or pod_link is None:
                raise EndpointError(f"veth {host_ifname}/{ifname} vanished while being set up")
            if not fresh:
                host.set_link(host_link.index, up=True)
            if any(a.gateway.version == 6 for a in addresses):
                _ipv6_at_once(host_netns, host_ifname)  # before the carrier comes up with the pod's end
            pod.set_link(LOOPBACK_INDEX, up=True)
            pod.set_link(pod_link.index, up=True)
            for address in addresses:
                pod.add_addr(pod_link.index, address.address)  # False (kept) when it is there
                for route in pod_routes(ifname, address, route_mtu, owns_default):
                    if owns_default:
                        pod.write_route(route, pod_link.index)
                    else:  # never take the owner's route to the same gateway away from it
                        _add_unless_there(pod, route, pod_link.index)
                host_route = Route(dst=host_prefix(address.address.ip), dev=host_ifname, scope=SCOPE_LINK)
                host.write_route(host_route, host_link.index)
                if address.gateway.version == 6:  # the node answers the pod's NS for its gateway
                    host.add_proxy_neigh(host_link.index, address.gateway)  # type: ignore[arg-type]
            undo.pop_all()
    except NetlinkError as exc:
        listed = ", ".join(str(a.address) for a in addresses)
        raise EndpointError(
            f"failed to wire {ifname} of container {container_id} ({host_ifname} <-> {pod_netns.label}, "
            f"{listed}): {exc}"
        ) from exc
    return EndpointInfo(
        host_ifname=host_ifname,
        host_ifindex=host_link.index,
        host_mac=host_link.mac,
        pod_ifname=ifname,
        pod_ifindex=pod_link.index,
        pod_mac=pod_link.mac,
        addresses=tuple(addresses),
        netns_path=pod_netns.label,
    )


LOOPBACK_INDEX = 1  # every network namespace's lo
VETH_MTU = 1500  # a pod veth's MTU unless the route MTU is larger (a jumbo underlay)


def _ipv6_at_once(host_netns: str | None, host_ifname: str) -> None:
    """Two IPv6 waits taken off the node's end of a pod veth (podnet's own device, so this is
    written wherever the node is; the machine's ``default`` values are never touched):
    ``proxy_delay=0``, else proxied answers to the pod's multicast solicitations wait up to 0.8 s;
    ``accept_dad=0``, else the end's link-local address stays tentative for a second after the
    pod's end comes up, and the node cannot solicit the pod's address meanwhile: the first
    packets to a new pod wait (measured: 1 s to 2 s for the first ping)."""
    ksysctl.ensure_sysctls(
        {f"net.ipv6.neigh.{host_ifname}.proxy_delay": "0", f"net.ipv6.conf.{host_ifname}.accept_dad": "0"},
        netns=host_netns,
        allow_initial_netns=True,
    )


def _add_unless_there(sock: Rtnl, route: Route, index: int) -> None:
    try:
        sock.write_route(route, index, replace=False)
    except NetlinkError as exc:
        if not is_exists(exc):
            raise


def _make_pair(
    host: Rtnl,
    pod: Rtnl,
    fd: int,
    host_ifname: str,
    ifname: str,
    label: str,
    mtu: int | None = None,
    gso: tuple[int | None, int | None] = (None, None),
) -> bool:
    """Make the veth (node end up, pod end born in the pod); True when made now, False when our
    pair is there already. The common case is one netlink call; only a name that exists leads to
    lookups: our pair is kept, a stale node end of ours is replaced, a stranger's name refused."""
    try:
        host.add_veth(host_ifname, ifname, fd, mtu=mtu, gso=gso)
        return True
    except NetlinkError as exc:
        if not is_exists(exc):
            raise
    if _peer_of(host, pod, host_ifname, ifname) is not None:
        return False
    if pod.get_link(ifname) is not None:
        raise EndpointError(
            f"interface {ifname} already exists in {label} and is not podnet's {host_ifname} peer; "
            "pick another CNI_IFNAME or remove it"
        )
    _delete_named(host, host_ifname)  # a stale end of ours whose peer is elsewhere
    host.add_veth(host_ifname, ifname, fd, mtu=mtu, gso=gso)
    return True


def _delete_named(sock: Rtnl, ifname: str) -> bool:
    link = sock.get_link(ifname)
    return link is not None and sock.delete_link(link.index)


def del_endpoint(
    host_netns: str | None, container_id: str, ifname: str, pod_netns: PodNetns | None = None
) -> bool:
    """Remove the attachment now; True if a link was deleted. Gone already (link or netns) is
    success. The node end is enough: deleting one end of a veth deletes its peer and all routes
    through them. ``pod_netns`` is only used when the node end is missing, to clear a peer left
    behind in a pod whose node end was renamed or moved. (CNI DEL uses ``retire_endpoint``.)"""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with _host_rtnl(host_netns) as host:
            if _delete_named(host, host_ifname):
                return True
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete {host_ifname} of container {container_id}: {exc}") from exc
    return pod_netns is not None and _delete_left_peer(pod_netns, ifname)


def _delete_left_peer(pod_netns: PodNetns, ifname: str) -> bool:
    try:
        with _pod_rtnl(pod_netns) as (_fd, pod):
            link = pod.get_link(ifname)
            return link is not None and link.kind == "veth" and pod.delete_link(link.index)
    except NetnsNotFoundError:
        return False


def retire_endpoint(
    host_netns: str | None, container_id: str, ifname: str, pod_netns: PodNetns | None = None
) -> bool:
    """CNI DEL's half that cannot wait: unplug the attachment now, delete its veth later.

    Deleting a veth makes the kernel wait for an RCU barrier (~20 ms here, most of a DEL), so
    DEL instead takes the node end down (the kernel drops every route through it at once),
    renames both ends out of the way (``lxz<ifindex>``: a repeated ADD of the same attachment can
    make its pair at once) and puts the node end in ``RETIRED_GROUP``; ``purge_retired`` deletes
    the whole group in one batch afterwards. True when a link was retired; a missing node end
    falls back to deleting a peer left in the pod, as ``del_endpoint`` does."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with _host_rtnl(host_netns) as host:
            link = host.get_link(host_ifname)
            if link is not None:
                host.set_link(link.index, up=False)
                if pod_netns is not None:
                    _retire_peer(host, pod_netns, host_ifname, ifname)
                host.set_link(link.index, name=retired_name(link.index), group=owned.RETIRED_GROUP)
                return True
    except NetlinkError as exc:
        if not is_gone(exc):  # deleted under us (the pod's namespace went away): nothing to retire
            raise EndpointError(f"failed to unplug {host_ifname} of container {container_id}: {exc}") from exc
        return True
    return pod_netns is not None and _delete_left_peer(pod_netns, ifname)


def _retire_peer(host: Rtnl, pod_netns: PodNetns, host_ifname: str, ifname: str) -> None:
    """Rename the pod's end of our pair (down already: its peer is) so ``ifname`` is free."""
    try:
        with _pod_rtnl(pod_netns) as (_fd, pod):
            peer = _peer_of(host, pod, host_ifname, ifname)
            if peer is not None:
                pod.set_link(peer.index, up=False)
                pod.set_link(peer.index, name=retired_name(peer.index))
    except NetnsNotFoundError:
        pass


def retired_name(index: int) -> str:
    return f"{owned.RETIRED_PREFIX}{index:x}"


def purge_retired(host_netns: str | None) -> bool:
    """Delete every retired veth on the node (``ip link del group RETIRED_GROUP``) in one batch;
    True when there were any. Also how an agent that was killed after a DEL finds its leftovers."""
    try:
        with _host_rtnl(host_netns) as host:
            return host.delete_group(owned.RETIRED_GROUP)
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete retired pod veths: {exc}") from exc


def _routes(ipr: IPRoute, family: int) -> dict[object, Route]:
    """Main-table routes of one family keyed by destination."""
    return {r.dst: r for r in kroute.dump_routes(ipr, family)}


def check_endpoint(
    host_netns: str | None,
    pod_netns: PodNetns,
    container_id: str,
    ifname: str,
    addresses: Sequence[PodAddress],
    route_mtu: int | None = None,
    owns_default: bool = True,
) -> list[str]:
    """What differs between the kernel and the attachment we wired; an empty list means healthy."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    problems: list[str] = []
    with _host(host_netns) as host, _host_rtnl(host_netns) as host_rtnl:
        if klink.link_index(host, host_ifname) is None:
            return [f"host link {host_ifname} is missing"]
        for address in addresses:
            route = _routes(host, address.family).get(host_prefix(address.address.ip))
            if route is None or route.dev != host_ifname:
                problems.append(f"node route {address.address.ip} dev {host_ifname} is missing")
        try:
            with _pod(pod_netns) as (_fd, pod), _pod_rtnl(pod_netns) as (_fd2, pod_rtnl):
                if _peer_of(host_rtnl, pod_rtnl, host_ifname, ifname) is None:
                    return [*problems, f"{ifname} in {pod_netns.label} is not the peer of {host_ifname}"]
                problems += _check_pod(pod, ifname, addresses, route_mtu, owns_default)
        except NetnsNotFoundError as exc:
            problems.append(str(exc))
    return problems


def _check_pod(
    pod: IPRoute, ifname: str, addresses: Sequence[PodAddress], route_mtu: int | None, owns_default: bool
) -> list[str]:
    problems: list[str] = []
    pod_idx = klink.link_index(pod, ifname)
    have = kaddr.addresses(pod, pod_idx) if pod_idx is not None else set()
    for address in addresses:
        if address.address not in have:
            listed = ", ".join(sorted(str(a) for a in have if a.version == address.family)) or "none"
            problems.append(f"{ifname} lacks address {address.address} (has {listed})")
        if not owns_default:
            continue
        default = _routes(pod, address.family).get(default_route(address.family))
        if default is None or default.gateway != address.gateway or default.dev != ifname:
            problems.append(f"pod default route via {address.gateway} dev {ifname} is missing")
        elif route_mtu is not None and default.mtu != route_mtu:
            problems.append(f"pod default route has mtu {default.mtu}, want {route_mtu}")
    return problems


def list_endpoints(host_netns: str | None) -> list[str]:
    """Names of the node-side pod links (``lxc`` prefix) present now, sorted."""
    with _host(host_netns) as host:
        names = (link.get("IFLA_IFNAME") for link in host.link("dump"))
        return sorted(n for n in names if n and n.startswith(owned.ENDPOINT_PREFIX))


def delete_host_link(host_netns: str | None, host_ifname: str) -> bool:
    """Delete one node-side pod link by name (GC of orphans); only ``lxc`` links are accepted."""
    if not host_ifname.startswith(owned.ENDPOINT_PREFIX):
        raise ValueError(f"refusing to delete {host_ifname}: not a podnet endpoint link (lxc prefix)")
    try:
        with _host_rtnl(host_netns) as host:
            return _delete_named(host, host_ifname)
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete orphan endpoint link {host_ifname}: {exc}") from exc


def set_route_mtu(pod_netns: PodNetns, ifname: str, gateways: Sequence[IPAddress], route_mtu: int) -> bool:
    """``ip route replace default via <gateway> dev <ifname> mtu <route_mtu>`` inside a pod, for
    each gateway (one per family).

    Used when the node's route MTU changes (a live switch between tunnel and native routing):
    the pod keeps its addresses and connections, only the MTU of its default routes follows.
    Returns False when the pod or its interface is gone (nothing to update)."""
    try:
        with _pod(pod_netns) as (_fd, pod):
            pod_idx = klink.link_index(pod, ifname)
            if pod_idx is None:
                return False
            for gateway in gateways:
                route = Route(dst=default_route(gateway.version), dev=ifname, gateway=gateway, mtu=route_mtu)
                kroute.replace_route(pod, route, pod_idx)
            return True
    except NetnsNotFoundError:
        return False
