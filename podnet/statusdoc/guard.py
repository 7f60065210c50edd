"""The agent's ``guard`` section: the pod guard's nft table (source verification, isolation),
its drop counters and each pod interface's spoofed-packet drops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import counts, integer, section, sections, texts


@dataclass(frozen=True)
class GuardedEndpoint:
    host_ifname: str
    addresses: tuple[str, ...] = ()
    spoof_drops: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "hostIfname": self.host_ifname,
            "addresses": list(self.addresses),
            "spoofDrops": self.spoof_drops,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GuardedEndpoint:
        return cls(
            host_ifname=str(doc.get("hostIfname") or ""),
            addresses=texts(doc.get("addresses")),
            spoof_drops=integer(doc.get("spoofDrops")) or 0,
        )


@dataclass(frozen=True)
class GuardStatus:
    enabled: bool = False
    source_verification: bool = False
    isolation: bool = False
    table: str = ""
    drops: Mapping[str, int] = field(default_factory=dict)  # per counter (drop reason)
    endpoints: tuple[GuardedEndpoint, ...] = ()
    tunnel_sources: tuple[str, ...] = ()  # the peers' underlay addresses tunnel packets may come from
    node_ports: tuple[str, ...] = ()  # "<port>/<proto>"

    def to_json(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "sourceVerification": self.source_verification,
            "isolation": self.isolation,
            "table": self.table,
            "drops": dict(self.drops),
            "endpoints": [e.to_json() for e in self.endpoints],
            "tunnelSources": list(self.tunnel_sources),
            "nodePorts": list(self.node_ports),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> GuardStatus:
        doc = section(doc)
        if not doc.get("enabled"):
            return cls()
        return cls(
            enabled=True,
            source_verification=bool(doc.get("sourceVerification")),
            isolation=bool(doc.get("isolation")),
            table=str(doc.get("table") or ""),
            drops=counts(doc.get("drops")),
            endpoints=tuple(GuardedEndpoint.from_json(e) for e in sections(doc.get("endpoints"))),
            tunnel_sources=texts(doc.get("tunnelSources")),
            node_ports=texts(doc.get("nodePorts")),
        )
