"""Tunnel protocols podnet knows, keyed by the ``tunnelProtocol`` config value.

Each protocol states only facts: its default UDP port, its per-packet overhead over an IPv4 or
IPv6 underlay, the podnet device that carries it and the kernel link kind that device needs.
VXLAN overhead is 50 bytes over IPv4 (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14) and
70 over IPv6 (outer header 40); Geneve without options has the same header sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet import owned


@dataclass(frozen=True)
class TunnelProtocol:
    """One encapsulation: what the MTU maths, node setup and the planner need to know."""

    name: str
    default_port: int
    overhead_ipv4: int
    overhead_ipv6: int
    device: str
    link_kind: str  # the kernel's rtnl link kind ("ip link add ... type <kind>")
    uses_fdb: bool  # True when peers are reached through FDB entries (kernel VXLAN)

    def overhead(self, underlay_family: int) -> int:
        """Bytes added to each packet when the underlay is IPv4 (4) or IPv6 (6)."""
        return self.overhead_ipv6 if underlay_family == 6 else self.overhead_ipv4


TUNNEL_PROTOCOLS: dict[str, TunnelProtocol] = {
    p.name: p
    for p in (
        TunnelProtocol(
            name="vxlan",
            default_port=8472,  # Linux/flannel/Cilium port, not IANA's 4789
            overhead_ipv4=50,
            overhead_ipv6=70,
            device=owned.VXLAN_DEV,
            link_kind="vxlan",
            uses_fdb=True,
        ),
        TunnelProtocol(
            name="geneve",
            default_port=6081,
            overhead_ipv4=50,
            overhead_ipv6=70,
            device=owned.GENEVE_DEV,
            link_kind="geneve",
            uses_fdb=False,
        ),
    )
}


def tunnel_protocol(name: str) -> TunnelProtocol:
    """The protocol registered as ``name``; KeyError names the valid choices."""
    try:
        return TUNNEL_PROTOCOLS[name]
    except KeyError:
        raise KeyError(
            f"unknown tunnel protocol {name!r}: valid choices are {', '.join(sorted(TUNNEL_PROTOCOLS))}"
        ) from None
