"""Idempotent netlink steps the lab builder uses, each inside one lab namespace.

Each ``ensure_*`` returns True when it changed the kernel and False when it found the object
already as wanted, so a second ``lab up`` can prove it is a no-op. Links are always created from
inside a lab namespace with the peer end put straight into another lab namespace: no lab link
ever exists in the machine's own namespace, not even for a moment.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from pyroute2 import IPRoute

from podnet.datapath.kernel.addr import ensure_addr
from podnet.datapath.kernel.link import link_index
from podnet.datapath.kernel.rtnl import Rtnl

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class Sockets:
    """One netlink socket per lab namespace, opened on first use and closed together."""

    def __init__(self) -> None:
        self._open: dict[str, IPRoute] = {}

    def __call__(self, ns: str) -> IPRoute:
        if ns not in self._open:
            self._open[ns] = IPRoute(netns=ns)
        return self._open[ns]

    def close(self) -> None:
        for ipr in self._open.values():
            ipr.close()
        self._open.clear()


def ensure_bridge(ipr: IPRoute, name: str, mtu: int) -> bool:
    if link_index(ipr, name) is not None:
        return False
    ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
    idx = link_index(ipr, name)
    ipr.link("set", index=idx, mtu=mtu, state="up")
    return True


def ensure_veth(ipr: IPRoute, ifname: str, peer_ns: str, peer_ifname: str, mtu: int) -> bool:
    """A veth pair: ``ifname`` in this socket's namespace, ``peer_ifname`` inside ``peer_ns``."""
    if link_index(ipr, ifname) is not None:
        return False
    ipr.link("add", ifname=ifname, kind="veth", mtu=mtu, peer={"ifname": peer_ifname, "net_ns_fd": peer_ns})
    return True


def ensure_wire_sizes(ns: str, ifname: str) -> bool:
    """A switch port or a router's link takes GSO packets as large as its driver allows, for
    both families: the lab's wire stands for a NIC that segments in hardware, so it must never be
    what splits a node's packets (BIG TCP's 192 KiB ones would otherwise be cut into 1500-byte
    frames in software here, on the sending CPU, and overflow the next veth's backlog)."""
    with Rtnl.in_netns(ns) as sock:
        link = sock.get_link(ifname)
        if link is None:
            raise RuntimeError(f"link {ifname} is missing in {ns}")
        sizes = sock.get_sizes(link.index)
        if sizes is None:
            raise RuntimeError(f"link {ifname} vanished in {ns}")
        top = sizes.tso_max
        ipv6 = top if (sizes.gso, sizes.gro) != (top, top) else None
        ipv4 = top if sizes.gso_ipv4 is not None and (sizes.gso_ipv4, sizes.gro_ipv4) != (top, top) else None
        if ipv6 is None and ipv4 is None:
            return False
        sock.set_sizes(link.index, ipv6=ipv6, ipv4=ipv4)
        return True


def ensure_up(ipr: IPRoute, ifname: str, mtu: int | None = None, master: str | None = None) -> bool:
    idx = link_index(ipr, ifname)
    if idx is None:
        raise RuntimeError(f"link {ifname} is missing")
    link = ipr.get_links(idx)[0]
    want: dict[str, object] = {}
    if link.get("state") != "up" or not link["flags"] & 1:
        want["state"] = "up"
    if mtu is not None and link.get_attr("IFLA_MTU") != mtu:
        want["mtu"] = mtu
    if master is not None:
        master_idx = link_index(ipr, master)
        if link.get_attr("IFLA_MASTER") != master_idx:
            want["master"] = master_idx
    if not want:
        return False
    ipr.link("set", index=idx, **want)
    return True


def ensure_address(
    ipr: IPRoute, ifname: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> bool:
    """The address on ``ifname`` (the agent's own ``ensure_addr`` by index)."""
    index = link_index(ipr, ifname)
    if index is None:
        raise RuntimeError(f"link {ifname} is missing")
    return ensure_addr(ipr, index, address)


def ensure_route(ipr: IPRoute, dst: IPNet | None, vias: Sequence[IPAddr]) -> bool:
    """``ip route replace <dst|default> via A`` or a multipath route over several next hops; the
    family is the next hops' (``default`` is ``::/0`` for IPv6 ones)."""
    family = vias[0].version
    dst_s = ("0.0.0.0/0" if family == 4 else "::/0") if dst is None else str(dst)
    want = sorted(str(v) for v in vias)
    have = _route_nexthops(ipr, dst_s)
    if have == want:
        return False
    if len(want) == 1:
        ipr.route("replace", dst=dst_s, gateway=want[0])
    else:
        ipr.route("replace", dst=dst_s, multipath=[{"gateway": g} for g in want])
    return True


def _route_nexthops(ipr: IPRoute, dst: str) -> list[str]:
    net = ipaddress.ip_network(dst)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    for r in ipr.get_routes(family=family, table=254):
        rdst = r.get_attr("RTA_DST") or str(net.network_address if net.prefixlen == 0 else "")
        if rdst != str(net.network_address) or r["dst_len"] != net.prefixlen:
            continue
        gw = r.get_attr("RTA_GATEWAY")
        if gw:
            return [gw]
        mp = r.get_attr("RTA_MULTIPATH") or []
        return sorted(h.get_attr("RTA_GATEWAY") for h in mp)
    return []
