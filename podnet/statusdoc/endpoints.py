"""The agent's ``endpoints`` section: the pod endpoints it serves, those whose namespace is gone
without a CNI DEL (stale), and the endpoint GC that reaps them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.statusdoc.values import integer, number, section, sections, texts


@dataclass(frozen=True)
class StaleEndpoint:
    container_id: str
    ifname: str
    netns: str = ""
    addresses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "containerID": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "addresses": list(self.addresses),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StaleEndpoint:
        return cls(
            container_id=str(doc.get("containerID") or ""),
            ifname=str(doc.get("ifname") or ""),
            netns=str(doc.get("netns") or ""),
            addresses=texts(doc.get("addresses")),
        )


@dataclass(frozen=True)
class EndpointsStatus:
    reported: bool = False  # False: an agent without the endpoint GC (the section is ``{}``)
    total: int = 0
    stale: tuple[StaleEndpoint, ...] = ()
    gc_interval: float = 0.0  # seconds; 0: off
    reaped: int = 0
    last_reaped: tuple[str, ...] = ()  # "<containerID>/<ifname>"
    last_sweep: float | None = None

    def to_json(self) -> dict[str, Any]:
        if not self.reported:
            return {}
        return {
            "total": self.total,
            "stale": [s.to_json() for s in self.stale],
            "gcInterval": self.gc_interval,
            "reaped": self.reaped,
            "lastReaped": list(self.last_reaped),
            "lastSweep": self.last_sweep,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> EndpointsStatus:
        doc = section(doc)
        if not doc:
            return cls()
        return cls(
            reported=True,
            total=integer(doc.get("total")) or 0,
            stale=tuple(StaleEndpoint.from_json(s) for s in sections(doc.get("stale"))),
            gc_interval=number(doc.get("gcInterval")) or 0.0,
            reaped=integer(doc.get("reaped")) or 0,
            last_reaped=texts(doc.get("lastReaped")),
            last_sweep=number(doc.get("lastSweep"), None),
        )
