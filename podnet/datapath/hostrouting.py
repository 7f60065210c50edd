"""BPF host routing (``bpf.hostLegacyRouting: false``): one program, ``bpf/hostrouting.c``, on the
ingress of every pod's node-side veth, sharing one pair of maps.

    tc filter replace dev podnet_net ingress pref 50 handle 1 bpf da obj hostrouting-*.o sec tc
    (the anchor: it loads the program; podnet_net carries no pod traffic)
    tc filter replace dev lxc... ingress pref 50 handle 1 bpf da fd <the same program>

``hr_endpoints`` maps each pod IPv4 address to its veth (ifindex, MAC; the pod's own MAC is learnt
by the program from the pod's packets), ``hr_cluster`` holds the cluster's IPv4 pod CIDRs. The
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

from podnet import owned
from podnet.datapath.bpf import build, maps, tc
from podnet.datapath.guard import EndpointSource
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel.sysctl import socket_netns

PREF = 50
SOURCE = "hostrouting.c"
VARIANT = "hostrouting"
ANCHOR = owned.NET_DEV
ENDPOINT = struct.Struct("=I6s6s")  # ifindex, host MAC, pod MAC
CIDR = struct.Struct("=I4s")  # prefix length (host order), address
STATS = ("redirectPeer", "redirectFib", "redirectNeigh", "kernel")


@dataclass(frozen=True)
class HostRoutingPlan:
    endpoints: tuple[tuple[ipaddress.IPv4Address, str], ...]  # (pod address, node-side veth)
    cluster: tuple[ipaddress.IPv4Network, ...]  # the pod CIDRs redirected to


def plan_host_routing(sources: Sequence[EndpointSource], cidrs: Iterable[Any]) -> HostRoutingPlan:
    """IPv4 only: IPv6 pod packets keep the kernel's path (pure)."""
    endpoints = sorted(
        {(a, s.host_ifname) for s in sources for a in s.addresses if isinstance(a, ipaddress.IPv4Address)}
    )
    cluster = sorted({c for c in cidrs if isinstance(c, ipaddress.IPv4Network)})
    return HostRoutingPlan(tuple(endpoints), tuple(cluster))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _program(ipr: Any) -> tc.Attached:
    """The loaded program, on the anchor (loaded there when missing or of an older build)."""
    obj = build.compiled(SOURCE, VARIANT)
    attached, _ = tc.attach(socket_netns(ipr), ANCHOR, "ingress", PREF, obj)
    return attached


def apply(ipr: Any, plan: HostRoutingPlan) -> list[str]:
    """Attach the program to every endpoint's veth and fill the maps; returns what changed."""
    program = _program(ipr)
    ids = maps.program_maps(program.prog_id)
    changes: list[str] = []
    netns = socket_netns(ipr)
    fd = maps.program_fd(program.prog_id)
    try:
        for dev in sorted({dev for _, dev in plan.endpoints}):
            index = klink.link_index(ipr, dev)
            if index is None:
                continue  # the pod went meanwhile
            mine = [f for f in tc.filters(netns, dev, "ingress") if f.pref == PREF]
            if not mine or mine[0].prog_id != program.prog_id:
                tc.attach_fd(ipr, index, PREF, fd, f"podnet-{VARIANT}")
                changes.append(f"attach host routing to {dev}")
    finally:
        os.close(fd)
    changes += _sync_endpoints(ipr, ids["hr_endpoints"], plan)
    changes += _sync_cluster(ids["hr_cluster"], plan)
    return changes


def _sync_endpoints(ipr: Any, map_id: int, plan: HostRoutingPlan) -> list[str]:
    current = {key: value for key, value in maps.dump(map_id)}
    wanted: dict[bytes, tuple[int, bytes]] = {}
    for address, dev in plan.endpoints:
        index = klink.link_index(ipr, dev)
        if index is not None:
            mac = klink.link_msg(ipr, index).get_attr("IFLA_ADDRESS")
            wanted[address.packed] = (index, _mac(mac))
    changes = []
    for key, (index, mac) in wanted.items():
        have = current.get(key)
        if have is None or ENDPOINT.unpack(have)[:2] != (index, mac):  # keep a learnt pod MAC
            maps.update(map_id, key, ENDPOINT.pack(index, mac, b"\0" * 6))
            changes.append(f"endpoint {ipaddress.IPv4Address(key)}")
    for key in set(current) - set(wanted):
        with contextlib.suppress(maps.MapError):
            maps.delete(map_id, key)
        changes.append(f"forget endpoint {ipaddress.IPv4Address(key)}")
    return changes


def _sync_cluster(map_id: int, plan: HostRoutingPlan) -> list[str]:
    current = {key for key, _ in maps.dump(map_id)}
    wanted = {CIDR.pack(c.prefixlen, c.network_address.packed): c for c in plan.cluster}
    changes = []
    for key in set(wanted) - current:
        maps.update(map_id, key, struct.pack("=I", 1))
        changes.append(f"cluster CIDR {wanted[key]}")
    for key in current - set(wanted):
        with contextlib.suppress(maps.MapError):
            maps.delete(map_id, key)
        changes.append("forget a cluster CIDR")
    return changes


def remove(ipr: Any) -> list[str]:
    """Every podnet host-routing filter goes (pods' veths and the anchor): Legacy host routing."""
    netns = socket_netns(ipr)
    removed = []
    for msg in ipr.get_links():
        name = str(msg.get_attr("IFLA_IFNAME"))
        if not (name.startswith(owned.ENDPOINT_PREFIX) or name == ANCHOR):
            continue
        if any(f.pref == PREF for f in tc.filters(netns, name, "ingress")):
            tc.detach(netns, name, "ingress", PREF)
            removed.append(f"detach host routing from {name}")
    return removed


def stats(ipr: Any) -> dict[str, Any]:
    """The program, where it is attached, its map fill and counters (for status)."""
    netns = socket_netns(ipr)
    anchor = [f for f in tc.filters(netns, ANCHOR, "ingress") if f.pref == PREF]
    if not anchor:
        return {"program": None}
    program = anchor[0]
    devices = [
        str(msg.get_attr("IFLA_IFNAME"))
        for msg in ipr.get_links()
        if str(msg.get_attr("IFLA_IFNAME")).startswith(owned.ENDPOINT_PREFIX)
        and any(
            f.prog_id == program.prog_id
            for f in tc.filters(netns, str(msg.get_attr("IFLA_IFNAME")), "ingress")
        )
    ]
    ids = maps.program_maps(program.prog_id)
    counters = dict.fromkeys(STATS, 0)
    for key, value in maps.dump(ids["hr_stats"]):
        slot = struct.unpack("=I", key)[0]
        if slot < len(STATS):
            counters[STATS[slot]] += sum(struct.unpack(f"={len(value) // 8}Q", value))
    learnt = sum(1 for _, v in maps.dump(ids["hr_endpoints"]) if ENDPOINT.unpack(v)[2] != b"\0" * 6)
    return {
        "program": {"id": program.prog_id, "object": program.name.split(":")[0]},
        "devices": devices,
        "endpoints": len(maps.dump(ids["hr_endpoints"])),
        "learntMACs": learnt,
        "clusterCIDRs": len(maps.dump(ids["hr_cluster"])),
        "counters": counters,
    }
