"""VXLAN in the kernel: one ``podnet_vxlan`` device, one FDB entry per peer.

    ip link add podnet_vxlan type vxlan id 1 dstport 8472 local <node ip> dev <underlay> nolearning

Overhead 50 bytes over IPv4 (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14), 70 over IPv6
(outer header 40). Port 8472 is the Linux/flannel/Cilium default, not IANA's 4789.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from podnet import owned
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import neigh as kneigh
from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels.base import DeviceRequest
from podnet.model import IPAddress
from podnet.registry import TUNNEL_PROTOCOLS

HEADER = 8
FLAG_VNI = 0x08  # the I flag: a valid VNI follows


class Vxlan:
    name = "vxlan"
    display = "VXLAN"
    default_port = 8472
    wire_ports = (8472, 4789)
    device = owned.VXLAN_DEV
    link_kind = "vxlan"

    def overhead(self, underlay_family: int) -> int:
        return 70 if underlay_family == 6 else 50

    def unsupported_reason(self, has_link_kind: Callable[[str], bool]) -> str | None:
        if has_link_kind(self.link_kind):
            return None
        return "needs the kernel's vxlan module, which this kernel lacks"

    def ensure_device(self, ipr: Any, request: DeviceRequest) -> int:
        spec = klink.VxlanSpec(
            name=self.device,
            vni=owned.VXLAN_VNI,
            port=request.port,
            local=request.local,
            underlay_index=request.underlay_index,
            mac=request.mac,
            mtu=request.mtu,
        )
        return klink.ensure_vxlan(ipr, spec)

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


TUNNEL_PROTOCOLS.register(Vxlan.name, Vxlan())
