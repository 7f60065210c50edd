"""One pod interface: a veth pair between the node and the pod, a /32 on each side's routes.

Per attachment (``ip`` equivalents, node side first)::

    ip link add lxcXXXXXXXXXXX type veth peer name eth0 netns <pod>   # peer born in the pod netns
    ip link set lxcXXXXXXXXXXX up
    ip route replace 10.244.1.5/32 dev lxcXXXXXXXXXXX scope link proto 201
    # inside the pod
    ip link set lo up; ip link set eth0 up
    ip addr add 10.244.1.5/32 dev eth0
    ip route replace 10.244.1.1/32 dev eth0 scope link
    ip route replace default via 10.244.1.1 dev eth0 mtu <route_mtu>

The router IP is a local address of the node (on ``podnet_host``), so the node answers the pod's
ARP for it on the veth. Deleting the node end removes both ends and every route through them,
which makes DEL one netlink call. ``add_endpoint`` undoes what it made if a later step fails.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.cni import spec
from podnet.util.netns import netlink_socket_in

SCOPE_LINK = 253
MAIN_TABLE = 254


class EndpointError(Exception):
    """Wiring a pod interface failed; ``cni_code`` is the CNI error code to report."""

    cni_code = spec.ERR_INTERFACE_SETUP


class NetnsNotFoundError(EndpointError):
    cni_code = spec.ERR_NETNS_NOT_FOUND


@dataclass(frozen=True)
class EndpointInfo:
    """What the kernel holds for one attachment, as the CNI result reports it."""

    host_ifname: str
    host_ifindex: int
    host_mac: str
    pod_ifname: str
    pod_ifindex: int
    pod_mac: str
    address: ipaddress.IPv4Interface
    netns_path: str


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


@contextlib.contextmanager
def _pod(netns_path: str) -> Iterator[tuple[int, IPRoute]]:
    """An fd pinning the pod netns (for ``net_ns_fd``) and a netlink socket inside it."""
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsNotFoundError(
            f"pod network namespace {netns_path} cannot be opened: {exc.strerror}; "
            "the container is probably gone"
        ) from None
    try:
        _refuse_own_namespace(fd, netns_path)
        try:
            ipr = netlink_socket_in(fd)
        except OSError as exc:
            raise NetnsNotFoundError(f"{netns_path} is not a network namespace: {exc}") from None
        try:
            yield fd, ipr
        finally:
            ipr.close()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


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


def _lookup(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _kind(link: object) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _ensure(call: object, *args: object, **kwargs: object) -> None:
    """Run a netlink 'add' where EEXIST means the object is already there (success)."""
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


def _is_our_pair(host: IPRoute, pod: IPRoute, host_ifname: str, ifname: str) -> bool:
    """True if ``ifname`` in the pod is the veth peer of ``host_ifname`` on the node."""
    host_idx, pod_idx = _lookup(host, host_ifname), _lookup(pod, ifname)
    if host_idx is None or pod_idx is None:
        return False
    link = pod.link("get", index=pod_idx)[0]
    return _kind(link) == "veth" and link.get("IFLA_LINK") == host_idx


def add_endpoint(
    host_netns: str | None,
    pod_netns_path: str,
    container_id: str,
    ifname: str,
    address: ipaddress.IPv4Interface,
    router_ip: ipaddress.IPv4Address,
    route_mtu: int,
) -> EndpointInfo:
    """Wire (or re-wire) one pod interface; idempotent; nothing made stays behind on failure."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    pod_ip = str(address.ip)
    try:
        with _host(host_netns) as host, _pod(pod_netns_path) as (fd, pod), contextlib.ExitStack() as undo:
            if not _is_our_pair(host, pod, host_ifname, ifname):
                if _lookup(pod, ifname) is not None:
                    raise EndpointError(
                        f"interface {ifname} already exists in {pod_netns_path} and is not podnet's "
                        f"{host_ifname} peer; pick another CNI_IFNAME or remove it"
                    )
                _delete_link(host, host_ifname)  # a stale end of ours whose peer is elsewhere
                host.link("add", ifname=host_ifname, kind="veth", peer={"ifname": ifname, "net_ns_fd": fd})
                undo.callback(_delete_link, host, host_ifname)
            host_idx = _lookup(host, host_ifname)
            pod_idx = _lookup(pod, ifname)
            if host_idx is None or pod_idx is None:
                raise EndpointError(f"veth {host_ifname}/{ifname} vanished while being set up")
            host.link("set", index=host_idx, state="up")
            lo_idx = _lookup(pod, "lo")
            if lo_idx is not None:
                pod.link("set", index=lo_idx, state="up")
            pod.link("set", index=pod_idx, state="up")
            _ensure(pod.addr, "add", index=pod_idx, address=pod_ip, prefixlen=32)
            pod.route("replace", dst=f"{router_ip}/32", oif=pod_idx, scope=SCOPE_LINK)
            pod.route(
                "replace", dst="0.0.0.0/0", gateway=str(router_ip), oif=pod_idx, metrics={"mtu": route_mtu}
            )
            host.route(
                "replace", dst=f"{pod_ip}/32", oif=host_idx, scope=SCOPE_LINK, proto=owned.ROUTE_PROTOCOL
            )
            host_link = host.link("get", index=host_idx)[0]
            pod_link = pod.link("get", index=pod_idx)[0]
            undo.pop_all()
    except NetlinkError as exc:
        raise EndpointError(
            f"failed to wire {ifname} of container {container_id} ({host_ifname} <-> {pod_netns_path}, "
            f"{address}): {exc}"
        ) from exc
    return EndpointInfo(
        host_ifname=host_ifname,
        host_ifindex=host_idx,
        host_mac=str(host_link.get("IFLA_ADDRESS")),
        pod_ifname=ifname,
        pod_ifindex=pod_idx,
        pod_mac=str(pod_link.get("IFLA_ADDRESS")),
        address=address,
        netns_path=pod_netns_path,
    )


def _delete_link(ipr: IPRoute, ifname: str) -> bool:
    idx = _lookup(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise
        return False
    return True


def del_endpoint(
    host_netns: str | None, container_id: str, ifname: str, pod_netns_path: str | None = None
) -> bool:
    """Remove the attachment; True if a link was deleted. Gone already (link or netns) is success.

    The node end is enough: deleting one end of a veth deletes its peer and all routes through
    them. ``pod_netns_path`` is only used when the node end is missing, to clear a peer left
    behind in a pod whose node end was renamed or moved.
    """
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    try:
        with _host(host_netns) as host:
            if _delete_link(host, host_ifname):
                return True
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete {host_ifname} of container {container_id}: {exc}") from exc
    if not pod_netns_path:
        return False
    try:
        with _pod(pod_netns_path) as (_fd, pod):
            idx = _lookup(pod, ifname)
            if idx is None or _kind(pod.link("get", index=idx)[0]) != "veth":
                return False
            return _delete_link(pod, ifname)
    except NetnsNotFoundError:
        return False


def _route_index(ipr: IPRoute) -> dict[str, dict[str, object]]:
    """Main-table IPv4 routes keyed by ``dst/len`` (``0.0.0.0/0`` for default)."""
    routes: dict[str, dict[str, object]] = {}
    for msg in ipr.route("dump", family=2, table=MAIN_TABLE):
        dst = f"{msg.get('RTA_DST') or '0.0.0.0'}/{msg['dst_len']}"
        metrics = msg.get("RTA_METRICS")
        routes[dst] = {
            "oif": msg.get("RTA_OIF"),
            "gateway": msg.get("RTA_GATEWAY"),
            "proto": msg["proto"],
            "mtu": metrics.get_attr("RTAX_MTU") if metrics is not None else None,
        }
    return routes


def check_endpoint(
    host_netns: str | None,
    pod_netns_path: str,
    container_id: str,
    ifname: str,
    address: ipaddress.IPv4Interface,
    router_ip: ipaddress.IPv4Address,
    route_mtu: int | None = None,
) -> list[str]:
    """What differs between the kernel and the attachment we wired; an empty list means healthy."""
    host_ifname = owned.endpoint_host_ifname(container_id, ifname)
    problems: list[str] = []
    with _host(host_netns) as host:
        host_idx = _lookup(host, host_ifname)
        if host_idx is None:
            return [f"host link {host_ifname} is missing"]
        route = _route_index(host).get(f"{address.ip}/32")
        if route is None or route["oif"] != host_idx:
            problems.append(f"node route {address.ip}/32 dev {host_ifname} is missing")
        try:
            with _pod(pod_netns_path) as (_fd, pod):
                if not _is_our_pair(host, pod, host_ifname, ifname):
                    return [*problems, f"{ifname} in {pod_netns_path} is not the peer of {host_ifname}"]
                pod_idx = _lookup(pod, ifname)
                problems += _check_pod(pod, pod_idx, ifname, address, router_ip, route_mtu)
        except NetnsNotFoundError as exc:
            problems.append(str(exc))
    return problems


def _check_pod(
    pod: IPRoute,
    pod_idx: int | None,
    ifname: str,
    address: ipaddress.IPv4Interface,
    router_ip: ipaddress.IPv4Address,
    route_mtu: int | None,
) -> list[str]:
    problems: list[str] = []
    addrs = {
        f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
        for a in pod.addr("dump", family=2)
        if a["index"] == pod_idx
    }
    if str(address) not in addrs:
        problems.append(f"{ifname} lacks address {address} (has {', '.join(sorted(addrs)) or 'none'})")
    routes = _route_index(pod)
    default = routes.get("0.0.0.0/0")
    if default is None or default["gateway"] != str(router_ip) or default["oif"] != pod_idx:
        problems.append(f"pod default route via {router_ip} dev {ifname} is missing")
    elif route_mtu is not None and default["mtu"] != route_mtu:
        problems.append(f"pod default route has mtu {default['mtu']}, want {route_mtu}")
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
            return _delete_link(host, host_ifname)
    except NetlinkError as exc:
        raise EndpointError(f"failed to delete orphan endpoint link {host_ifname}: {exc}") from exc


def set_route_mtu(pod_netns_path: str, ifname: str, router_ip: ipaddress.IPv4Address, route_mtu: int) -> bool:
    """``ip route replace default via <router ip> dev <ifname> mtu <route_mtu>`` inside a pod.

    Used when the node's route MTU changes (a live switch between tunnel and native routing):
    the pod keeps its address and connections, only the MTU of its default route follows.
    Returns False when the pod or its interface is gone (nothing to update)."""
    try:
        with _pod(pod_netns_path) as (_fd, pod):
            pod_idx = _lookup(pod, ifname)
            if pod_idx is None:
                return False
            pod.route(
                "replace", dst="0.0.0.0/0", gateway=str(router_ip), oif=pod_idx, metrics={"mtu": route_mtu}
            )
            return True
    except NetnsNotFoundError:
        return False
