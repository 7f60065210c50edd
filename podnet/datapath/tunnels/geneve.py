"""Geneve (RFC 8926), UDP 6081: the wire format, and a refusal where it cannot be carried.

The header is 8 bytes plus options (``opt_len`` 4-byte words), protocol type 0x6558 (Ethernet);
overhead without options is VXLAN's: 50 bytes over IPv4, 70 over IPv6. This kernel has no geneve
driver and podnet does not yet build the tunnel in eBPF, so ``unsupported_reason`` refuses it
before any device is touched (the config check and node setup both ask it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from podnet import owned
from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels.base import DeviceRequest, TunnelError
from podnet.model import IPAddress
from podnet.registry import TUNNEL_PROTOCOLS

HEADER = 8
ETHERNET = 0x6558


class Geneve:
    name = "geneve"
    display = "Geneve"
    default_port = 6081
    wire_ports = (6081,)
    device = owned.GENEVE_DEV
    link_kind = "geneve"

    def overhead(self, underlay_family: int) -> int:
        return 70 if underlay_family == 6 else 50

    def unsupported_reason(self, has_link_kind: Callable[[str], bool]) -> str | None:
        if not has_link_kind(self.link_kind):
            return "needs the kernel's geneve module, which this kernel lacks"
        return "is not built by podnet's node setup, which makes only VXLAN devices"

    def ensure_device(self, ipr: Any, request: DeviceRequest) -> int:
        raise TunnelError(f"tunnelProtocol={self.name}: {self.unsupported_reason(lambda _: True)}")

    def peer_entries(self, dev: str, vtep_mac: str, underlay_ip: IPAddress) -> tuple[FdbEntry, ...]:
        return ()

    def device_local(self, link_msg: Any) -> IPAddress | None:
        return None

    def inner_frame(self, payload: bytes) -> bytes | None:
        if len(payload) < HEADER + 14 or payload[0] >> 6 != 0:
            return None
        if int.from_bytes(payload[2:4], "big") != ETHERNET:
            return None
        start = HEADER + (payload[0] & 0x3F) * 4
        return payload[start:] if len(payload) >= start + 14 else None


TUNNEL_PROTOCOLS.register(Geneve.name, Geneve())
