"""MTU maths, pure: what MTU pod routes carry and what MTU the tunnel device gets.

Tunnel mode: route MTU = base - encapsulation overhead (VXLAN/Geneve: 50 over an IPv4 underlay,
70 over IPv6), where base is the explicit ``MTU`` setting or else the underlay device's MTU.
Native mode: route MTU = base. The kernel caps a VXLAN device bound to a lower device at the lower
device's MTU minus the overhead, so the tunnel device MTU is never above that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from podnet.datapath.modes.protocols import TUNNEL_PROTOCOLS

if TYPE_CHECKING:
    from podnet.config import AgentConfig

MIN_ROUTE_MTU = 576  # below this IPv4 hosts may refuse to talk at all (RFC 791's minimum datagram)


class MtuError(ValueError):
    """The configured or detected MTU leaves too little room for pod traffic."""


def tunnel_overhead(protocol: str, underlay_family: int = 4) -> int:
    """Bytes the tunnel protocol adds per packet over an IPv4 (4) or IPv6 (6) underlay."""
    return TUNNEL_PROTOCOLS[protocol].overhead(underlay_family)


def base_mtu(config: AgentConfig, underlay_mtu: int) -> int:
    """The explicit ``MTU`` setting when given (not 0), else the underlay device's MTU."""
    return config.mtu or underlay_mtu


def route_mtu(config: AgentConfig, underlay_mtu: int, underlay_family: int = 4) -> int:
    """MTU for pod routes (and the pods' default route) in the configured routing mode."""
    base = base_mtu(config, underlay_mtu)
    result = (
        base - tunnel_overhead(config.tunnel_protocol, underlay_family) if config.tunnel_enabled else base
    )
    if result < MIN_ROUTE_MTU:
        raise MtuError(
            f"route MTU {result} (base {base}, routingMode={config.routing_mode}) is below "
            f"{MIN_ROUTE_MTU}; raise the underlay MTU or set MTU explicitly"
        )
    return result


def tunnel_device_mtu(config: AgentConfig, underlay_mtu: int, underlay_family: int = 4) -> int:
    """MTU of the tunnel device: the route MTU, capped where the kernel caps it."""
    overhead = tunnel_overhead(config.tunnel_protocol, underlay_family)
    return min(base_mtu(config, underlay_mtu), underlay_mtu) - overhead
