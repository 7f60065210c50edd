"""The agent's ``pathMTU`` section: its path-MTU prober's last answers, per peer and family (a
full-size DF probe of each peer's underlay address) and each peer's pod side (a small ping over
the pod path), which ``podnet status`` uses for a real host's peer health."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.statusdoc.values import integer, number, section, sections, text


@dataclass(frozen=True)
class PathMtuCheck:
    peer: str
    address: str
    required: int = 0  # the size a full packet needs
    ok: bool = False
    discovered: int | None = None
    reachable: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "address": self.address,
            "required": self.required,
            "ok": self.ok,
            "discovered": self.discovered,
            "reachable": self.reachable,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PathMtuCheck:
        return cls(
            peer=str(doc.get("peer") or ""),
            address=str(doc.get("address") or ""),
            required=integer(doc.get("required")) or 0,
            ok=bool(doc.get("ok")),
            discovered=integer(doc.get("discovered"), None),
            reachable=bool(doc.get("reachable")),
            message=str(doc.get("message") or ""),
        )


@dataclass(frozen=True)
class PodSideCheck:
    address: str | None = None
    ok: bool = False
    detail: str = ""
    checked: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "ok": self.ok, "detail": self.detail, "checked": self.checked}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PodSideCheck:
        return cls(
            address=text(doc.get("address")),
            ok=bool(doc.get("ok")),
            detail=str(doc.get("detail") or ""),
            checked=number(doc.get("checked")) or 0.0,
        )


@dataclass(frozen=True)
class PathMtuStatus:
    checked: float = 0.0
    peers: tuple[PathMtuCheck, ...] = ()
    pod_side: Mapping[str, PodSideCheck] | None = None  # per peer; None: an agent without pod-side probes

    def of(self, peer: str) -> list[PathMtuCheck]:
        return [c for c in self.peers if c.peer == peer]

    def failing(self) -> list[PathMtuCheck]:
        return [c for c in self.peers if not c.ok]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"checked": self.checked, "peers": [p.to_json() for p in self.peers]}
        if self.pod_side is not None:
            doc["podSide"] = {name: check.to_json() for name, check in self.pod_side.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> PathMtuStatus:
        doc = section(doc)
        pod_side = doc.get("podSide")
        return cls(
            checked=number(doc.get("checked")) or 0.0,
            peers=tuple(PathMtuCheck.from_json(p) for p in sections(doc.get("peers"))),
            pod_side=None
            if not isinstance(pod_side, Mapping)
            else {str(k): PodSideCheck.from_json(section(v)) for k, v in pod_side.items()},
        )
