"""BPF host routing (``bpf.hostLegacyRouting: false``): one program, ``bpf/hostrouting.c``, on the
ingress of every pod's node-side veth, sharing one pair of maps.

    tc filter replace dev podnet_net ingress pref 50 handle 1 bpf da obj hostrouting-*.o sec tc
    (the anchor: it loads the program; podnet_net carries no pod traffic)
    tc filter replace dev lxc... ingress pref 50 handle 1 bpf da fd <the same program>

``hr_endpoints`` (``hr_endpoints6``) maps each pod IPv4 (IPv6) address to its veth (ifindex, MAC;
the pod's own MAC is learnt by the program from the pod's packets), ``hr_cluster``
(``hr_cluster6``) holds the cluster's pod CIDRs of that family. In a
tunnelling mode over an IPv4 underlay ``hr_tunnel`` says how to encapsulate (outer source, port,
VNI, the protocol's wire format, the tunnel device) and ``hr_peers`` maps each peer's VTEP MAC
to its underlay address (the tunnel's peer entries): the program then wraps packets for other
nodes itself instead of handing them to the tunnel device, for every protocol whose spec has a
``bpf_wire``. The protocol adds what its receiving side needs (``host_routing_decap``: a decap
program on the underlay devices, before this one, where its device would otherwise do it). The
plan is pure (``plan_host_routing``); ``apply`` brings the kernel to it and ``remove`` takes
every podnet filter of this kind away (the kernel then frees the program and its maps). A pod
whose veth has no program yet, or a packet the program declines, takes the kernel's path:
switching between the two keeps connections.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.bpf import build, maps, tc
from podnet.datapath.guard import EndpointSource
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel.sysctl import socket_netns
from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels import TunnelEncap, all_protocols
from podnet.specs import tunnel as tunnel_spec

PREF = 50
SOURCE = "hostrouting.c"
VARIANT = "hostrouting"
ANCHOR = owned.NET_DEV
ENDPOINT = struct.Struct("=I6s6s")  # ifindex, host MAC, pod MAC
TUNNEL = struct.Struct("=4sIIHBB")  # local, VNI, tunnel device ifindex, port, wire, pad
STATS = ("redirectPeer", "redirectFib", "redirectNeigh", "kernel", "encapsulated", "errors", "deliveredIn")


@dataclass(frozen=True)
class HostRoutingPlan:
    endpoints: tuple[tuple[Any, str], ...]  # (pod address of either family, node-side veth)
    cluster: tuple[Any, ...]  # the pod CIDRs redirected to, both families
    tunnel: TunnelEncap | None = None  # None: packets for the tunnel device go to it
    policed: tuple[Any, ...] = ()  # pods a NetworkPolicy isolates: their packets take netfilter's path
    peer_nodes: tuple[Any, ...] = ()  # the peers' node addresses: where they route is the underlay


def plan_tunnel(
    device: str | None, wire: str | None, local: Any, port: int, vni: int, fdb: Iterable[FdbEntry]
) -> TunnelEncap | None:
    """The encapsulation the program does, or None where it cannot: no tunnel, an IPv6 underlay
    (its outer UDP checksum is mandatory), a protocol whose header it does not write (pure)."""
    if device is None or wire is None or not isinstance(local, ipaddress.IPv4Address):
        return None
    if wire not in {s.name for s in tunnel_spec.specs() if s.bpf_wire is not None}:
        return None
    v4 = ipaddress.IPv4Address
    peers = sorted({(e.lladdr.lower(), e.dst) for e in fdb if e.dev == device and isinstance(e.dst, v4)})
    return TunnelEncap(device, wire, local, port, vni, tuple(peers))


def plan_host_routing(
    sources: Sequence[EndpointSource],
    cidrs: Iterable[Any],
    tunnel: TunnelEncap | None = None,
    policed: Iterable[Any] = (),
    peer_nodes: Iterable[Any] = (),
) -> HostRoutingPlan:
    """Both families, IPv4 first, sorted and unique (pure). A policed pod is no endpoint (its
    packets are not redirected from its veth) and its address is marked in the cluster map (no
    packet to it is redirected either): netfilter, where the policy table is, sees them all."""
    police = set(policed)
    endpoints = sorted(
        {(a, s.host_ifname) for s in sources for a in s.addresses if a not in police},
        key=lambda e: (e[0].version, e),
    )
    cluster = sorted(set(cidrs), key=lambda c: (c.version, c))
    return HostRoutingPlan(
        tuple(endpoints),
        tuple(cluster),
        tunnel,
        tuple(sorted(police, key=lambda a: (a.version, a))),
        tuple(sorted(set(peer_nodes), key=lambda a: (a.version, a))),
    )


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _program(ipr: Any) -> tc.Attached:
    """The loaded program, on the anchor (loaded there when missing or of an older build)."""
    obj = build.compiled(SOURCE, VARIANT)
    mine = [f for f in tc.listed(ipr, ANCHOR, "ingress") if f.pref == PREF and f.name.startswith(obj.name)]
    return mine[0] if mine else tc.attach(socket_netns(ipr), ANCHOR, "ingress", PREF, obj)[0]


def apply(ipr: Any, plan: HostRoutingPlan) -> list[str]:
    """Attach the program to every endpoint's veth and fill the maps; returns what changed."""
    program = _program(ipr)
    ids = maps.program_maps(program.prog_id)
    changes: list[str] = []
    fd = maps.program_fd(program.prog_id)
    underlay = _route_devices(ipr, plan.peer_nodes)
    try:
        for dev in sorted({dev for _, dev in plan.endpoints} | underlay):
            index = klink.link_index(ipr, dev)
            if index is None:
                continue  # the pod went meanwhile
            mine = [f for f in tc.listed(ipr, dev, "ingress", index) if f.pref == PREF]
            if not mine or mine[0].prog_id != program.prog_id:
                tc.attach_fd(ipr, index, PREF, fd, f"podnet-{VARIANT}")
                changes.append(f"attach host routing to {dev}")
    finally:
        os.close(fd)
    changes += _sync_underlay(ipr, ids["hr_underlay"], underlay)
    for family, suffix in ((4, ""), (6, "6")):
        changes += _sync_endpoints(ipr, ids[f"hr_endpoints{suffix}"], plan, family)
        changes += _sync_cluster(ids[f"hr_cluster{suffix}"], plan, family)
    changes += _sync_tunnel(ipr, ids, plan.tunnel)
    changes += _sync_decap(ipr, plan.tunnel)
    return changes


def _underlay_devices(ipr: Any, tunnel: TunnelEncap) -> set[str]:
    """The devices the peers' tunnel packets arrive on: where the routes to them leave."""
    return _route_devices(ipr, {a for _, a in tunnel.peers})


def _route_devices(ipr: Any, addresses: Iterable[Any]) -> set[str]:
    """Where the node's routes to ``addresses`` leave (podnet's own devices and pods' veths left out)."""
    names = set()
    for address in set(addresses):
        with contextlib.suppress(NetlinkError, IndexError):
            index = ipr.route("get", dst=str(address))[0].get_attr("RTA_OIF")
            if index is not None:
                names.add(str(klink.link_msg(ipr, index).get_attr("IFLA_IFNAME")))
    return {n for n in names if not n.startswith((owned.ENDPOINT_PREFIX, "podnet_")) and n != "lo"}


def _sync_underlay(ipr: Any, map_id: int, devices: set[str]) -> list[str]:
    """``hr_underlay``: the ifindexes of the devices packets for this node's pods arrive on."""
    wanted = {}
    for dev in devices:
        index = klink.link_index(ipr, dev)
        if index is not None:
            wanted[struct.pack("=I", index)] = dev
    current = {key for key, _ in maps.dump(map_id)}
    changes = []
    for key in set(wanted) - current:
        maps.update(map_id, key, struct.pack("=I", 1))
        changes.append(f"deliver to pods from {wanted[key]}")
    for key in current - set(wanted):
        with contextlib.suppress(maps.MapError):
            maps.delete(map_id, key)
        changes.append("stop delivering to pods from a device")
    return changes


def _sync_decap(ipr: Any, tunnel: TunnelEncap | None) -> list[str]:
    """Each protocol's receiving side: the one host routing encapsulates for gets its underlay
    devices, every other one takes its part away."""
    devices = _underlay_devices(ipr, tunnel) if tunnel is not None else set()
    return [c for p in all_protocols() for c in p.host_routing_decap(ipr, tunnel, devices)]


def _sync_tunnel(ipr: Any, ids: dict[str, int], tunnel: TunnelEncap | None) -> list[str]:
    index = klink.link_index(ipr, tunnel.device) if tunnel is not None else None
    if tunnel is None or index is None:
        wanted_config, wanted_peers = TUNNEL.pack(b"\0" * 4, 0, 0, 0, 0, 0), {}
    else:
        wire = tunnel_spec.spec(tunnel.wire).bpf_wire
        wanted_config = TUNNEL.pack(tunnel.local.packed, tunnel.vni, index, tunnel.port, wire, 0)
        wanted_peers = {_mac(mac) + b"\0\0": address.packed for mac, address in tunnel.peers}
    changes = []
    current_config = dict(maps.dump(ids["hr_tunnel"])).get(b"\0" * 4)
    if current_config != wanted_config:
        maps.update(ids["hr_tunnel"], b"\0" * 4, wanted_config)
        changes.append(f"encapsulate {tunnel.wire} for {tunnel.device}" if index else "no encapsulation")
    current = dict(maps.dump(ids["hr_peers"]))
    for key, value in wanted_peers.items():
        if current.get(key) != value:
            maps.update(ids["hr_peers"], key, value)
            changes.append(f"tunnel peer {key[:6].hex(':')} at {ipaddress.IPv4Address(value)}")
    for key in set(current) - set(wanted_peers):
        with contextlib.suppress(maps.MapError):
            maps.delete(ids["hr_peers"], key)
        changes.append(f"forget tunnel peer {key[:6].hex(':')}")
    return changes


def _sync_endpoints(ipr: Any, map_id: int, plan: HostRoutingPlan, family: int) -> list[str]:
    current = {key: value for key, value in maps.dump(map_id)}
    wanted: dict[bytes, tuple[int, bytes]] = {}
    for address, dev in plan.endpoints:
        if address.version != family:
            continue
        index = klink.link_index(ipr, dev)
        if index is not None:
            mac = klink.link_msg(ipr, index).get_attr("IFLA_ADDRESS")
            wanted[address.packed] = (index, _mac(mac))
    changes = []
    for key, (index, mac) in wanted.items():
        have = current.get(key)
        if have is None or ENDPOINT.unpack(have)[:2] != (index, mac):  # keep a learnt pod MAC
            maps.update(map_id, key, ENDPOINT.pack(index, mac, b"\0" * 6))
            changes.append(f"endpoint {ipaddress.ip_address(key)}")
    for key in set(current) - set(wanted):
        with contextlib.suppress(maps.MapError):
            maps.delete(map_id, key)
        changes.append(f"forget endpoint {ipaddress.ip_address(key)}")
    return changes


HR_CLUSTER, HR_KERNEL = 1, 2  # hr_cluster's values (hostrouting.c)


def _sync_cluster(map_id: int, plan: HostRoutingPlan, family: int) -> list[str]:
    current = {key: value for key, value in maps.dump(map_id)}
    wanted: dict[bytes, tuple[Any, int]] = {
        struct.pack("=I", c.prefixlen) + c.network_address.packed: (c, HR_CLUSTER)
        for c in plan.cluster
        if c.version == family
    }
    for address in plan.policed:
        if address.version == family:
            net = ipaddress.ip_network(address)
            wanted[struct.pack("=I", net.prefixlen) + net.network_address.packed] = (net, HR_KERNEL)
    changes = []
    for key, (net, value) in wanted.items():
        if current.get(key) != struct.pack("=I", value):
            maps.update(map_id, key, struct.pack("=I", value))
            changes.append(f"{'cluster CIDR' if value == HR_CLUSTER else 'policed pod'} {net}")
    for key in set(current) - set(wanted):
        with contextlib.suppress(maps.MapError):
            maps.delete(map_id, key)
        changes.append("forget a cluster CIDR or policed pod")
    return changes


def remove(ipr: Any) -> list[str]:
    """Every podnet host-routing filter goes (pods' veths and the anchor): Legacy host routing."""
    netns = socket_netns(ipr)
    removed = []
    for index, name in _links(ipr):
        if name == "lo" or (name.startswith("podnet_") and name != ANCHOR):
            continue  # pods' veths, the anchor and the underlay devices may have one
        if any(f.pref == PREF for f in tc.listed(ipr, name, "ingress", index)):
            tc.detach(netns, name, "ingress", PREF)
            removed.append(f"detach host routing from {name}")
    return removed + _sync_decap(ipr, None)


def _links(ipr: Any) -> list[tuple[int, str]]:
    return [(int(msg["index"]), str(msg.get_attr("IFLA_IFNAME"))) for msg in ipr.get_links()]


def stats(ipr: Any) -> dict[str, Any]:
    """The program, where it is attached, its map fill and counters (for status)."""
    anchor = [f for f in tc.listed(ipr, ANCHOR, "ingress") if f.pref == PREF]
    if not anchor:
        return {"program": None}
    program = anchor[0]
    attached = [
        name
        for index, name in _links(ipr)
        if not name.startswith(("podnet_", "lo"))
        and any(f.prog_id == program.prog_id for f in tc.listed(ipr, name, "ingress", index))
    ]
    devices = [d for d in attached if d.startswith(owned.ENDPOINT_PREFIX)]
    ids = maps.program_maps(program.prog_id)
    counters = maps.counters(ids["hr_stats"], STATS)
    endpoints = [v for name in ("hr_endpoints", "hr_endpoints6") for _, v in maps.dump(ids[name])]
    learnt = sum(1 for v in endpoints if ENDPOINT.unpack(v)[2] != b"\0" * 6)
    return {
        "program": {"id": program.prog_id, "object": program.name.split(":")[0]},
        "devices": devices,
        "underlayDevices": [d for d in attached if d not in devices],
        "endpoints": len(endpoints),
        "learntMACs": learnt,
        "clusterCIDRs": len(maps.dump(ids["hr_cluster"])) + len(maps.dump(ids["hr_cluster6"])),
        "tunnelPeers": len(maps.dump(ids["hr_peers"])),
        "underlay": len(maps.dump(ids["hr_underlay"])),
        "counters": counters,
        "decap": [d for p in all_protocols() for d in p.host_routing_decap_stats(ipr)],
    }
