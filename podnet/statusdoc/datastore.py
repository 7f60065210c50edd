"""The agent's datastore lines: ``kvstore`` (etcd) and ``kubernetes`` (the API server), each the
last answer of a real probe (Cilium's ``KVStore:`` and ``Kubernetes:`` lines)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ETCD, KUBERNETES, DISABLED = "etcd", "kubernetes", "disabled"


@dataclass(frozen=True)
class StoreHealth:
    kind: str  # etcd | kubernetes | disabled
    state: str = "unknown"  # ok | unreachable | disabled | unknown (not probed yet)
    version: str | None = None
    last_success: float | None = None  # unix seconds
    failing_since: float | None = None
    error: str | None = None
    endpoints: tuple[str, ...] = ()  # etcd: the configured members
    active: str | None = None  # etcd: the member that answers
    tls: bool = False  # etcd: mutual TLS

    @classmethod
    def disabled(cls) -> StoreHealth:
        return cls(DISABLED, DISABLED)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def unreachable(self) -> bool:
        return self.state == "unreachable"

    def to_json(self) -> dict[str, Any]:
        if self.kind == DISABLED:
            return {"state": DISABLED}
        doc: dict[str, Any] = {
            "state": self.state,
            "version": self.version,
            "lastSuccess": self.last_success,
            "failingSince": self.failing_since,
            "error": self.error,
        }
        if self.kind == ETCD:
            doc |= {
                "endpoints": list(self.endpoints),
                "active": self.active,
                "connected": self.ok,  # kept for readers of the older document
                "tls": self.tls,
            }
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None, kind: str) -> StoreHealth:
        """``kind`` is the line it was read from; an absent line is ``disabled``."""
        if not doc or doc.get("state") == DISABLED:
            return cls.disabled()
        if "state" in doc:
            state = str(doc["state"])
        elif "connected" in doc:  # an agent from before the probe, or before its first answer
            state = "ok" if doc["connected"] else "unreachable"
        else:
            state = "unknown"
        return cls(
            kind=kind,
            state=state,
            version=_text(doc.get("version")),
            last_success=_seconds(doc.get("lastSuccess")),
            failing_since=_seconds(doc.get("failingSince")),
            error=_text(doc.get("error")),
            endpoints=tuple(str(e) for e in doc.get("endpoints") or ()),
            active=_text(doc.get("active")),
            tls=bool(doc.get("tls")),
        )


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None
