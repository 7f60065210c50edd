"""The agent's ``policy`` section: the NetworkPolicies in force on the node and its table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PolicyStatus:
    enabled: bool = False
    source: str = ""  # kubernetes | etcd
    policies: int = 0
    invalid: tuple[str, ...] = ()  # refused as the API server would refuse them, with why
    unresolved: tuple[str, ...] = ()  # e.g. a named port no selected pod has
    isolated_ingress: int = 0  # local pod addresses a policy isolates
    isolated_egress: int = 0
    entries: int = 0  # allowed (source, destination, port) entries in the table
    applied_at: float = 0.0
    covered: Mapping[str, int] = field(default_factory=dict)  # per kind, the resourceVersion included
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "source": self.source,
            "policies": self.policies,
            "invalid": list(self.invalid),
            "unresolved": list(self.unresolved),
            "isolatedIngress": self.isolated_ingress,
            "isolatedEgress": self.isolated_egress,
            "entries": self.entries,
            "appliedAt": self.applied_at,
            "covered": dict(self.covered),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> PolicyStatus:
        if not doc:
            return cls()
        return cls(
            enabled=bool(doc.get("enabled")),
            source=str(doc.get("source") or ""),
            policies=int(doc.get("policies") or 0),
            invalid=tuple(str(i) for i in doc.get("invalid") or ()),
            unresolved=tuple(str(u) for u in doc.get("unresolved") or ()),
            isolated_ingress=int(doc.get("isolatedIngress") or 0),
            isolated_egress=int(doc.get("isolatedEgress") or 0),
            entries=int(doc.get("entries") or 0),
            applied_at=float(doc.get("appliedAt") or 0.0),
            covered={str(k): int(v) for k, v in (doc.get("covered") or {}).items()},
            error=str(doc.get("error") or ""),
        )


@dataclass(frozen=True)
class PodPolicy:
    """The answer to ``{"op": "policy", "ip": ...}``: the node's policy section and, for that local
    pod address, the policies that isolate it each way and the entries that allow its traffic."""

    node: str = ""
    status: PolicyStatus = field(default_factory=PolicyStatus)
    ingress_isolated_by: tuple[str, ...] = ()
    egress_isolated_by: tuple[str, ...] = ()
    ingress: tuple[str, ...] = ()  # "<src> -> <dst> <proto>/<port>"
    egress: tuple[str, ...] = ()

    def isolated_by(self, egress: bool) -> tuple[str, ...]:
        return self.egress_isolated_by if egress else self.ingress_isolated_by

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "node": self.node,
            **self.status.to_json(),
            "ingressIsolatedBy": list(self.ingress_isolated_by),
            "egressIsolatedBy": list(self.egress_isolated_by),
            "ingress": list(self.ingress),
            "egress": list(self.egress),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PodPolicy:
        return cls(
            node=str(doc.get("node") or ""),
            status=PolicyStatus.from_json(doc),
            ingress_isolated_by=tuple(str(p) for p in doc.get("ingressIsolatedBy") or ()),
            egress_isolated_by=tuple(str(p) for p in doc.get("egressIsolatedBy") or ()),
            ingress=tuple(str(e) for e in doc.get("ingress") or ()),
            egress=tuple(str(e) for e in doc.get("egress") or ()),
        )
