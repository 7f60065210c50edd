"""MTU maths, pure: what MTU pod routes carry and what MTU the tunnel device gets.

Route MTU = base - the tunnel protocol's overhead when the routing mode tunnels (its spec's
``overhead``: 50 bytes over an IPv4 underlay, 70 over IPv6 for an 8-byte header), else base; base
is the explicit ``MTU`` setting or else the underlay device's MTU. The kernel caps a tunnel
device bound to a lower device at the lower device's MTU minus the overhead, so the tunnel device
MTU is never above that.
"""

from __future__ import annotations

from podnet.config import AgentConfig
from podnet.datapath.modes import RoutingMode
from podnet.datapath.tunnels import TunnelProtocol

MIN_ROUTE_MTU = 576  # below this IPv4 hosts may refuse to talk at all (RFC 791's minimum datagram)


class MtuError(ValueError):
    """The configured or detected MTU leaves too little room for pod traffic."""


def base_mtu(config: AgentConfig, underlay_mtu: int) -> int:
    """The explicit ``MTU`` setting when given (not 0), else the underlay device's MTU."""
    return config.mtu or underlay_mtu


def route_mtu(config: AgentConfig, mode: RoutingMode, underlay_mtu: int, underlay_family: int = 4) -> int:
    """MTU for pod routes (and the pods' default route) in ``mode``."""
    base = base_mtu(config, underlay_mtu)
    protocol = mode.tunnel(config)
    result = base - protocol.overhead(underlay_family) if protocol is not None else base
    if result < MIN_ROUTE_MTU:
        raise MtuError(
            f"route MTU {result} (base {base}, routingMode={config.routing_mode}) is below "
            f"{MIN_ROUTE_MTU}; raise the underlay MTU or set MTU explicitly"
        )
    return result


def tunnel_device_mtu(
    config: AgentConfig, protocol: TunnelProtocol, underlay_mtu: int, underlay_family: int = 4
) -> int:
    """MTU of the tunnel device: the route MTU, capped where the kernel caps it."""
    return min(base_mtu(config, underlay_mtu), underlay_mtu) - protocol.overhead(underlay_family)
