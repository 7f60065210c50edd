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
address of the node on ``podnet_host``), so the node answers the pod's ARP for it on the veth.
Deleting the node end removes both ends and every route through them, which makes DEL one
netlink call. ``add_endpoint`` undoes what it made if a later step fails. Errors are
``EndpointError``s; the CNI handler maps them to CNI codes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import is_exists, is_gone
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import route as kroute
from podnet.datapath.objects import SCOPE_LINK, Route, default_route, host_prefix
from podnet.model import IPAddress
from podnet.util.netns import netlink_socket_in

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class EndpointError(Exception):
    """Wiring a pod interface failed; the message names the interface, the pod and the reason."""


class NetnsNotFoundError(EndpointError):
    """The pod's network namespace cannot be opened (or is not a pod's)."""


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


@contextlib.contextmanager
def _host(host_netns: str | None) -> Iterator[IPRoute]:
    if host_netns:
        fd = os.open(f"/run/netns/{host_netns}", os.O_RDONLY | os.O_CLOEXEC)  # never created here
        try:
            ipr = netlink_socket_in(fd)
        finally:
            os.close(fd)
    else:
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


@dataclass(frozen=True)
class PodNetns:
    """A pod's network namespace as the agent holds it: an open descriptor (handed over by the CNI
    plugin, which opened ``CNI_NETNS`` in the runtime's mount namespace, or found by the agent
    itself) and the runtime's name for it, for messages and the result's ``sandbox``. The agent
    never opens a path a caller gave it; whoever made the descriptor closes it."""

    fd: int
    label: str

    def identity(self) -> str:
        """``dev:inode`` of the namespace: stable while it lives, recorded with the attachment."""
        st = os.fstat(self.fd)
        return f"{st.st_dev}:{st.st_ino}"


@contextlib.contextmanager
def opened(path: str) -> Iterator[PodNetns]:
    """Open a namespace file (a bind mount or /proc/PID/ns/net) as a ``PodNetns``. For the plugin
    side, tests and namespaces the agent found itself; never for a path from a CNI call. Opening
    never blocks (a FIFO or device given as the path is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise NetnsNotFoundError(
            f"pod network namespace {path} cannot be opened: {exc.strerror}; the container is probably gone"
        ) from None
    try:
        yield PodNetns(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def find(identity: str, recorded_path: str = "") -> Iterator[PodNetns | None]:
    """The live namespace recorded as ``identity`` (``dev:inode``), for work the agent does on its
    own (a route MTU change, GC): the recorded path when ``stat`` shows it still is that namespace
    (a runtime that shares the agent's mount namespace), else a process inside it
    (``/proc/PID/ns/net``). Nothing is opened before its identity matched. ``None``: the pod is
    gone, or only reachable from a mount namespace the agent cannot see and holds no process."""
    found = False
    for path in _paths_of(identity, recorded_path):
        try:
            with opened(path) as netns:
                if netns.identity() != identity:  # replaced between stat and open
                    continue
                found = True
                yield netns
                return
        except NetnsNotFoundError:
            if found:
                raise
    yield None


def _paths_of(identity: str, recorded_path: str) -> Iterator[str]:
    """Paths that ``stat`` shows are the namespace ``identity``, best first."""

    def same(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return f"{st.st_dev}:{st.st_ino}" == identity

    if not identity:
        return
    if recorded_path and same(recorded_path):
        yield recorded_path
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        path = f"/proc/{pid}/ns/net"
        if same(path):
            yield path


@contextlib.contextmanager
def _pod(netns: PodNetns) -> Iterator[tuple[int, IPRoute]]:
    """The namespace's fd (for ``net_ns_fd``) and a netlink socket inside it, after checking that
    the descriptor is a network namespace and not the node's own."""
    fd, label = netns.fd, netns.label
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise NetnsNotFoundError(f"{label}: the namespace descriptor is not usable: {exc.strerror}") from None
    if not stat.S_ISREG(mode):  # an nsfs file (bind mount or /proc/PID/ns/net)
        raise NetnsNotFoundError(f"{label} is not a network namespace (not an nsfs file)")
    _refuse_own_namespace(fd, label)
    try:
        ipr = netlink_socket_in(fd)
    except OSError as exc:
        raise NetnsNotFoundError(f"{label} is not a network namespace: {exc}") from None
    try:
        yield fd, ipr
    finally:
        ipr.close()


def _refuse_own_namespace(fd: int, netns_path: str) -> None:
    """A pod namespace is never the node's own (nor the machine's): a runtime or lab bug passing
    /proc/1/ns/net must not get pod routes written into the host."""
    target = os.fstat(fd)
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            mine = os.stat(own)
        except OSError:
            continue
        if (mine.st_dev, mine.st_ino) == (target.st_dev, target.st_ino):
            raise NetnsNotFoundError(
                f"CNI_NETNS {netns_path} is the node's own network namespace, not a pod's; "
                "the runtime must pass the pod sandbox's namespace"
            )


def _kind(link: object) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _is_our_pair(host: IPRoute, pod: IPRoute, host_ifname: str, ifname: str) -> bool:
    """True if ``ifname`` in the pod is the veth peer of ``host_ifname`` on the node."""
    host_idx, pod_idx = klink.link_index(host, host_ifname), klink.link_index(pod, ifname)
    if host_idx is None or pod_idx is None:
        return False
    link = pod.link("get", index=pod_idx)[0]
    return _kind(link) == "veth" and link.get("IFLA_LINK") == host_idx


def add_endpoint(
    host_netns: str | None,
    pod_netns: PodNetns,
    container_id: str,
    ifname: str,
    addresses: Sequence[PodAddress],
    route_mtu: int,
    owns_default: bool = True,
) -> EndpointInfo:
    """Wire (or re-wire) one pod interface; idempotent; nothing made stays behind on failure.
    Only the attachment that owns the pod's default route (``owns_default``) installs it, so a
    second attachment (``net1``) never takes it from the first, and its DEL never removes it."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with _host(host_netns) as host, _pod(pod_netns) as (fd, pod), contextlib.ExitStack() as undo:
            fresh = _make_pair(host, pod, fd, host_ifname, ifname, pod_netns.label)
            if fresh:
                undo.callback(klink.delete_link, host, host_ifname)
            host_link, pod_link = _get_link(host, host_ifname), _get_link(pod, ifname)
            if host_link is None or pod_link is None:
                raise EndpointError(f"veth {host_ifname}/{ifname} vanished while being set up")
            host_idx, pod_idx = int(host_link["index"]), int(pod_link["index"])
            if not fresh:
                host.link("set", index=host_idx, state="up")
            pod.link("set", index=LOOPBACK_INDEX, state="up")
            pod.link("set", index=pod_idx, state="up")
            for address in addresses:
                if fresh:  # a new veth has no addresses: no need to read them first
                    kaddr.add_addr(pod, pod_idx, address.address)
                else:
                    kaddr.ensure_addr(pod, pod_idx, address.address)
                for route in pod_routes(ifname, address, route_mtu, owns_default):
                    if owns_default:
                        kroute.replace_route(pod, route, pod_idx)
                    else:  # never take the owner's route to the same gateway away from it
                        _add_unless_there(pod, route, pod_idx)
                host_route = Route(dst=host_prefix(address.address.ip), dev=host_ifname, scope=SCOPE_LINK)
                kroute.replace_route(host, host_route, host_idx)
            undo.pop_all()
    except NetlinkError as exc:
        listed = ", ".join(str(a.address) for a in addresses)
        raise EndpointError(
            f"failed to wire {ifname} of container {container_id} ({host_ifname} <-> {pod_netns.label}, "
            f"{listed}): {exc}"
        ) from exc
    return EndpointInfo(
        host_ifname=host_ifname,
        host_ifindex=host_idx,
        host_mac=str(host_link.get("IFLA_ADDRESS")),
        pod_ifname=ifname,
        pod_ifindex=pod_idx,
        pod_mac=str(pod_link.get("IFLA_ADDRESS")),
        addresses=tuple(addresses),
        netns_path=pod_netns.label,
    )


LOOPBACK_INDEX = 1  # every network namespace's lo


def _add_unless_there(ipr: IPRoute, route: Route, index: int) -> None:
    try:
        ipr.route("add", **kroute.route_kwargs(route, index))
    except NetlinkError as exc:
        if not is_exists(exc):
            raise


def _make_pair(host: IPRoute, pod: IPRoute, fd: int, host_ifname: str, ifname: str, label: str) -> bool:
    """Make the veth (node end up, pod end born in the pod); True when made now, False when our
    pair is there already. The common case is one netlink call; only a name that exists leads to
    lookups: our pair is kept, a stale node end of ours is replaced, a stranger's name refused."""
    try:
        _add_veth(host, fd, host_ifname, ifname)
        return True
    except NetlinkError as exc:
        if not is_exists(exc):
            raise
    if _is_our_pair(host, pod, host_ifname, ifname):
        return False
    if klink.link_index(pod, ifname) is not None:
        raise EndpointError(
            f"interface {ifname} already exists in {label} and is not podnet's {host_ifname} peer; "
            "pick another CNI_IFNAME or remove it"
        )
    klink.delete_link(host, host_ifname)  # a stale end of ours whose peer is elsewhere
    _add_veth(host, fd, host_ifname, ifname)
    return True


def _add_veth(host: IPRoute, fd: int, host_ifname: str, ifname: str) -> None:
    host.link("add", ifname=host_ifname, kind="veth", state="up", peer={"ifname": ifname, "net_ns_fd": fd})


def _get_link(ipr: IPRoute, ifname: str) -> object | None:
    """The link's message (index, MAC, flags) in one call; None when there is no such link."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if is_gone(exc):
            return None
        raise


def del_endpoint(
    host_netns: str | None, container_id: str, ifname: str, pod_netns: PodNetns | None = None
) -> bool:
    """Remove the attachment; True if a link was deleted. Gone already (link or netns) is success.

    The node end is enough: deleting one end of a veth deletes its peer and all routes through
    them. ``pod_netns`` is only used when the node end is missing, to clear a peer left
    behind in a pod whose node end was renamed or moved.
    """
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with _host(host_netns) as host:
            if klink.delete_link(host, host_ifname):
                return True
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete {host_ifname} of container {container_id}: {exc}") from exc
    if pod_netns is None:
        return False
    try:
        with _pod(pod_netns) as (_fd, pod):
            idx = klink.link_index(pod, ifname)
            if idx is None or _kind(pod.link("get", index=idx)[0]) != "veth":
                return False
            return klink.delete_link(pod, ifname)
    except NetnsNotFoundError:
        return False


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
    with _host(host_netns) as host:
        if klink.link_index(host, host_ifname) is None:
            return [f"host link {host_ifname} is missing"]
        for address in addresses:
            route = _routes(host, address.family).get(host_prefix(address.address.ip))
            if route is None or route.dev != host_ifname:
                problems.append(f"node route {address.address.ip} dev {host_ifname} is missing")
        try:
            with _pod(pod_netns) as (_fd, pod):
                if not _is_our_pair(host, pod, host_ifname, ifname):
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
        with _host(host_netns) as host:
            return klink.delete_link(host, host_ifname)
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
