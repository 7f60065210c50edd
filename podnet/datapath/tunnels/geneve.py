"""Geneve (RFC 8926), UDP 6081, in tc-BPF: this kernel has no geneve driver.

    ip link add podnet_geneve type veth peer name podnet_gnv_peer     (both up, VTEP MAC, MTU)
    tc filter replace dev podnet_geneve egress  pref 49 handle 1 bpf da obj geneve-encap-*.o sec tc
    tc filter replace dev <underlay>    ingress pref 49 handle 1 bpf da obj geneve-decap-*.o sec tc

The tunnel mode plans Geneve as any protocol with a VTEP MAC: per peer a route ``via <peer router
IP> dev podnet_geneve onlink``, a permanent neighbour (router IP -> peer VTEP MAC) and one peer
entry (VTEP MAC -> peer underlay address). A kernel tunnel device would keep that entry in its
FDB; here it lives in the encap program's ``gnv_peers`` map (and the address in the decap
program's ``gnv_allowed``, so only peers' Geneve packets are decapsulated: the nft guard runs
after tc ingress). The encap program wraps the routed frame in IPv4/UDP/Geneve (protocol 0x6558,
VNI 1) and redirects it out of the underlay device (``bpf_redirect_neigh``); the decap program
strips the outer headers and the inner Ethernet header and lets the inner packet go on
(``podnet/datapath/bpf/geneve.c``).
Overhead: 50 bytes (outer IPv4 20, UDP 8, Geneve 8, inner Ethernet 14). Over an IPv6 underlay the
outer UDP checksum is mandatory, which these programs do not compute: Geneve needs an IPv4
underlay (its spec lists only that family, so ``tunnelProtocol`` refuses the other).
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Callable
from typing import Any

from podnet import owned
from podnet.datapath.bpf import build, maps, tc
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel.sysctl import socket_netns
from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels.base import Described, DeviceRequest, TunnelError
from podnet.model import IPAddress
from podnet.registry import TUNNEL_PROTOCOLS
from podnet.specs.geneve import GENEVE

HEADER = 8
ETHERNET = 0x6558
PEER_DEV = "podnet_gnv_peer"  # the other end of podnet_geneve's veth: never carries a packet
PREF = 49  # podnet's tc filter priority on both hooks
SOURCE = "geneve.c"
CONFIG = struct.Struct("=4sIIHH")  # local (network order), vni, underlay ifindex, port, pad
STATS = ("encapsulated", "noPeer", "decapsulated", "denied", "errors")


def _mac_key(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + b"\0\0"


class Geneve(Described):
    """The protocol; one instance serves every namespace (it remembers each one's underlay device)."""

    spec = GENEVE
    device = owned.GENEVE_DEV
    peer_entry = "peer map entry"
    link_kind = "veth"  # podnet_geneve is a veth whose egress program encapsulates

    def __init__(self) -> None:
        self._underlay: dict[str | None, str] = {}  # namespace -> the device the decap program is on

    def bpf_objects(self) -> tuple[tuple[str, str], ...]:
        return ((SOURCE, "encap"), (SOURCE, "decap"))

    def unsupported_reason(self, has_link_kind: Callable[[str], bool]) -> str | None:
        return None if has_link_kind("veth") else "needs veth devices, which this kernel lacks"

    # ---- the device and its programs ----------------------------------------------------------

    def ensure_device(self, ipr: Any, request: DeviceRequest) -> int:
        problem = self.spec.underlay_problem(request.local.version)
        if problem:
            raise TunnelError(f"tunnelProtocol={problem}")
        netns = socket_netns(ipr)
        try:
            encap_obj, decap_obj = build.compiled(SOURCE, "encap"), build.compiled(SOURCE, "decap")
        except build.BpfBuildError as exc:
            raise TunnelError(f"tunnelProtocol=geneve: {exc}") from None
        index, peer_index = klink.ensure_veth_pair(ipr, self.device, PEER_DEV)
        want = {"address": request.mac, "mtu": request.mtu}
        msg = klink.link_msg(ipr, index)
        if msg.get_attr("IFLA_ADDRESS") != request.mac or msg.get_attr("IFLA_MTU") != request.mtu:
            ipr.link("set", index=index, **want)
        klink.ensure_mtu(ipr, peer_index, request.mtu)
        underlay = klink.link_msg(ipr, request.underlay_index).get_attr("IFLA_IFNAME")
        config = CONFIG.pack(
            ipaddress.IPv4Address(request.local).packed,
            owned.VXLAN_VNI,
            request.underlay_index,
            request.port,
            0,
        )
        try:
            encap, _ = tc.attach(netns, self.device, "egress", PREF, encap_obj, ipr)
            decap, _ = tc.attach(netns, underlay, "ingress", PREF, decap_obj, ipr)
            self._underlay[netns] = underlay
            for attached in (encap, decap):
                maps.update(maps.program_maps(attached.prog_id)["gnv_config"], b"\0\0\0\0", config)
        except (tc.TcError, maps.MapError, KeyError) as exc:
            raise TunnelError(f"tunnelProtocol=geneve: attaching its programs failed: {exc}") from None
        return index

    def remove_device(self, ipr: Any) -> bool:
        """The device, and the decap program on whichever device it was attached to."""
        netns = socket_netns(ipr)
        removed = False
        for msg in ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            if any(f.name.startswith("geneve-decap-") for f in tc.listed(ipr, name, "ingress", msg["index"])):
                removed |= tc.detach(netns, name, "ingress", PREF)
        return klink.delete_link(ipr, self.device) or removed

    # ---- per-peer entries: the BPF maps -----------------------------------------------------------

    def peer_entries(self, dev: str, vtep_mac: str, underlay_ip: IPAddress) -> tuple[FdbEntry, ...]:
        return (FdbEntry(lladdr=vtep_mac, dst=underlay_ip, dev=dev),)

    def programs(self, ipr: Any) -> tuple[tc.Attached | None, tc.Attached | None]:
        """The attached encap and decap programs (None for one that is not attached). The decap
        program is looked for on the underlay device node setup named, else on every device."""
        netns = socket_netns(ipr)
        encap = [f for f in tc.listed(ipr, self.device, "egress") if f.pref == PREF]
        known = self._underlay.get(netns)
        names = [known] if known else []
        names += [
            n for msg in ipr.get_links() if (n := msg.get_attr("IFLA_IFNAME")) not in (self.device, known)
        ]
        decap: list[tc.Attached] = []
        for name in names:
            decap = [
                f
                for f in tc.listed(ipr, name, "ingress")
                if f.pref == PREF and f.name.startswith("geneve-decap-")
            ]
            if decap:
                self._underlay[netns] = name
                break
        return (encap[0] if encap else None), (decap[0] if decap else None)

    def _maps(self, ipr: Any) -> tuple[dict[str, int], dict[str, int]]:
        encap, decap = self.programs(ipr)
        if encap is None or decap is None:
            raise LookupError("the Geneve programs are not attached (node setup attaches them)")
        return maps.program_maps(encap.prog_id), maps.program_maps(decap.prog_id)

    def dump_peers(self, ipr: Any, index: int, dev: str) -> list[FdbEntry]:
        try:
            encap, _ = self._maps(ipr)
        except LookupError:
            return []
        return [
            FdbEntry(
                lladdr=":".join(f"{b:02x}" for b in key[:6]), dst=ipaddress.IPv4Address(value[:4]), dev=dev
            )
            for key, value in maps.dump(encap["gnv_peers"])
        ]

    def set_peer(self, ipr: Any, index: int, entry: FdbEntry) -> None:
        encap, decap = self._maps(ipr)
        address = ipaddress.IPv4Address(entry.dst).packed
        maps.update(decap["gnv_allowed"], address, struct.pack("=I", 1))
        maps.update(encap["gnv_peers"], _mac_key(entry.lladdr), address)

    def delete_peer(self, ipr: Any, index: int, entry: FdbEntry) -> bool:
        try:
            encap, decap = self._maps(ipr)
        except LookupError:
            return False
        try:
            maps.delete(encap["gnv_peers"], _mac_key(entry.lladdr))
        except maps.MapError:
            return False
        if not any(other.dst == entry.dst for other in self.dump_peers(ipr, index, entry.dev)):
            with contextlib.suppress(maps.MapError):  # not there: nothing to allow any more
                maps.delete(decap["gnv_allowed"], ipaddress.IPv4Address(entry.dst).packed)
        return True

    def stats(self, ipr: Any) -> dict[str, Any]:
        """What status shows: the programs, their map fill and their counters."""
        attached = [p for p in self.programs(ipr) if p is not None]
        programs = [{"id": p.prog_id, "object": p.name, "dev": p.dev, "hook": p.direction} for p in attached]
        try:
            encap, decap = self._maps(ipr)
        except (LookupError, maps.MapError) as exc:
            return {"programs": programs, "error": str(exc)}
        counters = dict.fromkeys(STATS, 0)
        for ids in (encap, decap):
            for name, total in maps.counters(ids["gnv_stats"], STATS).items():
                counters[name] += total
        return {
            "programs": programs,
            "peers": len(maps.dump(encap["gnv_peers"])),
            "allowed": len(maps.dump(decap["gnv_allowed"])),
            "counters": counters,
        }

    def device_local(self, link_msg: Any) -> IPAddress | None:
        return None

    def inner_frame(self, payload: bytes) -> bytes | None:
        if len(payload) < HEADER + 14 or payload[0] >> 6 != 0:
            return None
        if int.from_bytes(payload[2:4], "big") != ETHERNET:
            return None
        start = HEADER + (payload[0] & 0x3F) * 4
        return payload[start:] if len(payload) >= start + 14 else None


TUNNEL_PROTOCOLS.register(GENEVE.name, Geneve())
