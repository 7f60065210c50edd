"""The agent's ``peers`` and ``routes`` sections: how its last round planned to reach each peer
(tunnel, direct route, underlay) and why, and the pod routes it planned (``ip route`` lines)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.statusdoc.values import integer, text, texts


@dataclass(frozen=True)
class PeerPlan:
    name: str
    reach: str  # tunnel | direct-route | underlay
    why: str = ""
    issues: tuple[str, ...] = ()  # "<severity>: <message>"
    ipv4: str | None = None
    ipv6: str | None = None
    pod_cidrs: tuple[str, ...] = ()
    router_ips: tuple[str, ...] = ()

    def address(self, family: int) -> str | None:
        """The peer's node address of ``family``, else its other one."""
        own = self.ipv4 if family == 4 else self.ipv6
        return own or self.ipv4 or self.ipv6

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reach": self.reach,
            "why": self.why,
            "issues": list(self.issues),
            "ipv4": self.ipv4,
            "ipv6": self.ipv6,
            "podCIDRs": list(self.pod_cidrs),
            "routerIPs": list(self.router_ips),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PeerPlan:
        return cls(
            name=str(doc.get("name") or ""),
            reach=str(doc.get("reach") or ""),
            why=str(doc.get("why") or ""),
            issues=texts(doc.get("issues")),
            ipv4=text(doc.get("ipv4")),
            ipv6=text(doc.get("ipv6")),
            pod_cidrs=texts(doc.get("podCIDRs")),
            router_ips=texts(doc.get("routerIPs")),
        )


@dataclass(frozen=True)
class PlannedRoute:
    """``<dst> [via <gateway>] dev <dev> [mtu <mtu>]``"""

    dst: str
    dev: str | None = None
    gateway: str | None = None
    mtu: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"dst": self.dst, "dev": self.dev, "gateway": self.gateway, "mtu": self.mtu}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PlannedRoute:
        return cls(
            dst=str(doc.get("dst") or ""),
            dev=text(doc.get("dev")),
            gateway=text(doc.get("gateway")),
            mtu=integer(doc.get("mtu"), None),
        )
