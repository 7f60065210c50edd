"""VXLAN in the kernel: one ``podnet_vxlan`` device, one FDB entry per peer.

    ip link add podnet_vxlan type vxlan id 1 dstport 8472 local <node ip> dev <underlay> nolearning

Overhead 50 bytes over IPv4 (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14), 70 over IPv6
(outer header 40). Port 8472 is the Linux/flannel/Cilium default, not IANA's 4789.

A VXLAN device's VNI, port, local address, lower device and learning flag cannot be changed in
place, so ``ensure_vxlan`` recreates the device when one of them differs and only updates MAC and
MTU otherwise.

Under BPF host routing the sending side is ``bpf/hostrouting.c`` (it writes the VXLAN header,
``bpf_wire`` in the spec) and the receiving side is ``bpf/vxlan.c`` on the underlay devices'
ingress (pref 48, before host routing's 50): it strips the headers of VXLAN packets from the
peers so host routing delivers the inner packet straight to the pod. The device stays as the
fallback and for what the program leaves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podnet import owned
from podnet.datapath.bpf import build, maps, tc
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import neigh as kneigh
from podnet.datapath.kernel.sysctl import socket_netns
from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels.base import Described, DeviceRequest, TunnelEncap
from podnet.model import IPAddress
from podnet.registry import TUNNEL_PROTOCOLS
from podnet.specs.vxlan import VXLAN

HEADER = 8
FLAG_VNI = 0x08  # the I flag: a valid VNI follows
DECAP_PREF = 48  # before BPF host routing's 50: host routing then delivers the inner packet
OLD_DECAP_PREFS = (51,)  # where podnet before 2026-12-06 attached it: detached when found
DECAP_SOURCE = "vxlan.c"
DECAP_VARIANT = "decap"
DECAP_CONFIG = struct.Struct("=IHH")  # VNI, port, pad
DECAP_STATS = ("decapsulated", "denied", "errors")


@dataclass(frozen=True)
class VxlanSpec:
    """``ip link add <name> type vxlan id <vni> dstport <port> local <local> dev <underlay>
    nolearning`` with ``address <mac> mtu <mtu>``."""

    name: str
    vni: int
    port: int
    local: IPAddress
    underlay_index: int
    mac: str
    mtu: int


def ensure_vxlan(ipr: Any, spec: VxlanSpec) -> int:
    """The VXLAN device as ``spec`` says, up; recreated when an immutable attribute differs."""
    index = klink.link_index(ipr, spec.name)
    if index is not None and _vxlan_fixed(ipr, index) != _spec_fixed(spec):
        klink.delete_link(ipr, spec.name)
        index = None
    if index is None:
        family = "vxlan_local" if spec.local.version == 4 else "vxlan_local6"
        ipr.link(
            "add",
            ifname=spec.name,
            kind="vxlan",
            vxlan_id=spec.vni,
            vxlan_port=spec.port,
            vxlan_link=spec.underlay_index,
            vxlan_learning=0,
            address=spec.mac,
            **{family: str(spec.local)},
        )
        index = klink.link_index(ipr, spec.name)
        assert index is not None, f"vxlan device {spec.name} vanished after creation"
    msg = klink.link_msg(ipr, index)
    if str(msg.get_attr("IFLA_ADDRESS")).lower() != spec.mac.lower():
        ipr.link("set", index=index, address=spec.mac)
    klink.ensure_mtu(ipr, index, spec.mtu)
    klink.ensure_up(ipr, index)
    return index


def _spec_fixed(spec: VxlanSpec) -> tuple[object, ...]:
    return (spec.vni, spec.port, str(spec.local), spec.underlay_index, 0)


def _vxlan_fixed(ipr: Any, index: int) -> tuple[object, ...] | None:
    info = klink.link_msg(ipr, index).get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
    return (
        data.get_attr("IFLA_VXLAN_ID"),
        data.get_attr("IFLA_VXLAN_PORT"),
        str(ipaddress.ip_address(local)) if local else None,
        data.get_attr("IFLA_VXLAN_LINK"),
        data.get_attr("IFLA_VXLAN_LEARNING"),
    )


class Vxlan(Described):
    spec = VXLAN
    device = owned.VXLAN_DEV
    link_kind = "vxlan"

    def unsupported_reason(self, has_link_kind: Callable[[str], bool]) -> str | None:
        if has_link_kind(self.link_kind):
            return None
        return "needs the kernel's vxlan module, which this kernel lacks"

    def ensure_device(self, ipr: Any, request: DeviceRequest) -> int:
        spec = VxlanSpec(
            name=self.device,
            vni=owned.VXLAN_VNI,
            port=request.port,
            local=request.local,
            underlay_index=request.underlay_index,
            mac=request.mac,
            mtu=request.mtu,
        )
        return ensure_vxlan(ipr, spec)

    def remove_device(self, ipr: Any) -> bool:
        return klink.delete_link(ipr, self.device)

    def peer_entries(self, dev: str, vtep_mac: str, underlay_ip: IPAddress) -> tuple[FdbEntry, ...]:
        return (FdbEntry(lladdr=vtep_mac, dst=underlay_ip, dev=dev),)

    def dump_peers(self, ipr: Any, index: int, dev: str) -> list[FdbEntry]:
        return kneigh.dump_fdb(ipr, index, dev)

    def set_peer(self, ipr: Any, index: int, entry: FdbEntry) -> None:
        kneigh.replace_fdb(ipr, index, entry)

    def delete_peer(self, ipr: Any, index: int, entry: FdbEntry) -> bool:
        return kneigh.delete_fdb(ipr, index, entry)

    def stats(self, ipr: Any) -> dict[str, Any]:
        return {}

    def device_local(self, link_msg: Any) -> IPAddress | None:
        info = link_msg.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        if data is None:
            return None
        local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
        return ipaddress.ip_address(local) if local else None

    def inner_frame(self, payload: bytes) -> bytes | None:
        if len(payload) < HEADER + 14 or not payload[0] & FLAG_VNI:
            return None
        return payload[HEADER:]

    # ---- the receiving side under BPF host routing ------------------------------------------------

    def bpf_objects(self) -> tuple[tuple[str, str], ...]:
        return ((DECAP_SOURCE, DECAP_VARIANT),)

    def decap_filters(self, ipr: Any) -> list[tc.Attached]:
        """The decap programs, wherever they are attached (underlay devices: pods' veths and
        podnet's own devices are not looked at)."""
        found = []
        for msg in ipr.get_links():
            name = str(msg.get_attr("IFLA_IFNAME"))
            if name.startswith((owned.ENDPOINT_PREFIX, "podnet_")) or name == "lo":
                continue
            found += [
                f
                for f in tc.listed(ipr, name, "ingress", int(msg["index"]))
                if f.pref == DECAP_PREF
                or (f.pref in OLD_DECAP_PREFS and f.name.startswith(f"{DECAP_SOURCE[:-2]}-decap-"))
            ]
        return found

    def host_routing_decap(self, ipr: Any, encap: TunnelEncap | None, devices: set[str]) -> list[str]:
        netns = socket_netns(ipr)
        mine = encap is not None and encap.wire == self.name
        wanted = devices if mine else set()
        changes = []
        for attached in self.decap_filters(ipr):
            if attached.dev not in wanted or attached.pref != DECAP_PREF:
                tc.detach(netns, attached.dev, "ingress", attached.pref)
                changes.append(f"detach the {self.display} decap from {attached.dev}")
        if encap is None or not mine:
            return changes
        obj = build.compiled(DECAP_SOURCE, DECAP_VARIANT)
        config = DECAP_CONFIG.pack(encap.vni, encap.port, 0)
        allowed = {address.packed for _, address in encap.peers}
        for dev in sorted(wanted):
            attached, new = tc.attach(netns, dev, "ingress", DECAP_PREF, obj, ipr)
            if new:
                changes.append(f"attach the {self.display} decap to {dev}")
            ids = maps.program_maps(attached.prog_id)
            if dict(maps.dump(ids["vx_config"])).get(b"\0" * 4) != config:
                maps.update(ids["vx_config"], b"\0" * 4, config)
            current = {key for key, _ in maps.dump(ids["vx_allowed"])}
            for key in allowed - current:
                maps.update(ids["vx_allowed"], key, struct.pack("=I", 1))
                changes.append(f"decapsulate {self.display} from {ipaddress.IPv4Address(key)} on {dev}")
            for key in current - allowed:
                with contextlib.suppress(maps.MapError):
                    maps.delete(ids["vx_allowed"], key)
                changes.append(
                    f"stop decapsulating {self.display} from {ipaddress.IPv4Address(key)} on {dev}"
                )
        return changes

    def host_routing_decap_stats(self, ipr: Any) -> list[dict[str, Any]]:
        out = []
        for attached in self.decap_filters(ipr):
            ids = maps.program_maps(attached.prog_id)
            out.append(
                {
                    "protocol": self.display,
                    "program": {"id": attached.prog_id, "object": attached.name.split(":")[0]},
                    "dev": attached.dev,
                    "allowed": len(maps.dump(ids["vx_allowed"])),
                    "counters": maps.counters(ids["vx_stats"], DECAP_STATS),
                }
            )
        return out


TUNNEL_PROTOCOLS.register(VXLAN.name, Vxlan())
