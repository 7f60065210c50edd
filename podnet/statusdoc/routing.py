"""The agent's ``routing``, ``mtu`` and ``lastRound`` sections: how it routes pod traffic (the
routing mode and the tunnel protocol as named by their specs), the MTUs it planned with and the
packet sizes of BIG TCP, and what its last reconcile round did."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import integer, number, section, text, texts


@dataclass(frozen=True)
class RoutingStatus:
    mode: str = ""  # routingMode as configured
    mode_name: str = ""  # the routing mode's spec name
    tunnel_protocol: str | None = None  # None: the node never encapsulates
    tunnel_port: int | None = None
    auto_direct_node_routes: bool = False
    tunnel_fallback: bool = False
    ipv4_native_routing_cidr: str | None = None
    ipv6_native_routing_cidr: str | None = None
    families: tuple[str, ...] = ()  # "IPv4", "IPv6"
    underlay_protocol: str = "ipv4"

    @property
    def native_routing_cidrs(self) -> tuple[str, ...]:
        return tuple(c for c in (self.ipv4_native_routing_cidr, self.ipv6_native_routing_cidr) if c)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "modeName": self.mode_name,
            "tunnelProtocol": self.tunnel_protocol,
            "tunnelPort": self.tunnel_port,
            "autoDirectNodeRoutes": self.auto_direct_node_routes,
            "tunnelFallback": self.tunnel_fallback,
            "ipv4NativeRoutingCIDR": self.ipv4_native_routing_cidr,
            "ipv6NativeRoutingCIDR": self.ipv6_native_routing_cidr,
            "families": list(self.families),
            "underlayProtocol": self.underlay_protocol,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> RoutingStatus:
        doc = section(doc)
        return cls(
            mode=str(doc.get("mode") or ""),
            mode_name=str(doc.get("modeName") or ""),
            tunnel_protocol=text(doc.get("tunnelProtocol")),
            tunnel_port=integer(doc.get("tunnelPort"), None),
            auto_direct_node_routes=bool(doc.get("autoDirectNodeRoutes")),
            tunnel_fallback=bool(doc.get("tunnelFallback")),
            ipv4_native_routing_cidr=text(doc.get("ipv4NativeRoutingCIDR")),
            ipv6_native_routing_cidr=text(doc.get("ipv6NativeRoutingCIDR")),
            families=texts(doc.get("families")),
            underlay_protocol=str(doc.get("underlayProtocol") or "ipv4"),
        )


LEGACY_GSO = 65536  # the kernel's GSO/GRO size; above it a family runs BIG TCP


@dataclass(frozen=True)
class BigTcpFamily:
    """One family's BIG TCP: the GSO/GRO size pods and the underlay use, and why a wanted
    family stays at 64 KiB (``problem``)."""

    size: int = LEGACY_GSO
    problem: str | None = None

    @property
    def enabled(self) -> bool:
        return self.size > LEGACY_GSO

    def line(self) -> str:
        """Cilium's ``IPv4 BIG TCP: Enabled [196608]`` or ``Disabled``, with the reason."""
        if self.enabled:
            return f"Enabled [{self.size}]"
        return f"Disabled ({self.problem})" if self.problem else "Disabled"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "enabled": self.enabled, "problem": self.problem}

    @classmethod
    def from_json(cls, doc: Any) -> BigTcpFamily:
        doc = section(doc)
        return cls(size=integer(doc.get("size"), None) or LEGACY_GSO, problem=text(doc.get("problem")))


@dataclass(frozen=True)
class MtuStatus:
    """The underlay device's MTU, the pod routes' MTU the last round planned, and BIG TCP."""

    device: int | None = None
    route: int | None = None  # None before the first round
    underlay_device: str | None = None
    big_tcp_ipv4: BigTcpFamily = field(default_factory=BigTcpFamily)
    big_tcp_ipv6: BigTcpFamily = field(default_factory=BigTcpFamily)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "route": self.route,
            "underlayDevice": self.underlay_device,
            "bigTCP": {"ipv4": self.big_tcp_ipv4.to_json(), "ipv6": self.big_tcp_ipv6.to_json()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> MtuStatus | None:
        if not doc:
            return None
        big = section(doc.get("bigTCP"))
        return cls(
            device=integer(doc.get("device"), None),
            route=integer(doc.get("route"), None),
            underlay_device=text(doc.get("underlayDevice")),
            big_tcp_ipv4=BigTcpFamily.from_json(big.get("ipv4")),
            big_tcp_ipv6=BigTcpFamily.from_json(big.get("ipv6")),
        )


@dataclass(frozen=True)
class LastRound:
    plan_seconds: float = 0.0
    apply_seconds: float = 0.0
    changes: int = 0
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "planSeconds": self.plan_seconds,
            "applySeconds": self.apply_seconds,
            "changes": self.changes,
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> LastRound:
        doc = section(doc)
        return cls(
            plan_seconds=number(doc.get("planSeconds")) or 0.0,
            apply_seconds=number(doc.get("applySeconds")) or 0.0,
            changes=integer(doc.get("changes")) or 0,
            errors=integer(doc.get("errors")) or 0,
        )
