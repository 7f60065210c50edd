"""The agent's ``node`` section: the node as it registered itself (``podnet.model.NodeInfo``'s
JSON, read here without the model: statusdoc sits below it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import section, text, texts


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    ipv4: str | None = None
    ipv6: str | None = None
    vtep_mac: str | None = None
    pod_cidrs: tuple[str, ...] = ()
    router_ips: tuple[str, ...] = ()
    health: str = "ok"
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ipv4": self.ipv4,
            "ipv6": self.ipv6,
            "vtepMAC": self.vtep_mac,
            "podCIDRs": list(self.pod_cidrs),
            "routerIPs": list(self.router_ips),
            "health": self.health,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> NodeIdentity | None:
        if not doc:
            return None
        return cls(
            name=str(doc.get("name") or ""),
            ipv4=text(doc.get("ipv4")),
            ipv6=text(doc.get("ipv6")),
            vtep_mac=text(doc.get("vtepMAC")),
            pod_cidrs=texts(doc.get("podCIDRs")),
            router_ips=texts(doc.get("routerIPs")),
            health=str(doc.get("health") or "ok"),
            labels={str(k): str(v) for k, v in section(doc.get("labels")).items()},
        )
