"""The agent's ``ipam`` section (its IPAM mode's pod CIDRs, use, allocations and per-pool use) and
``failedAdds`` (its last CNI ADDs that failed, with the error the runtime got)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import integer, number, optional, section, sections, text, texts


@dataclass(frozen=True)
class PoolUse:
    """One pool's use on the node, per family (``podnet.ipam.base.PoolUsage``'s JSON)."""

    pool: str  # "default" in single-pool modes
    family: int
    cidrs: tuple[str, ...] = ()  # what this node holds of the pool
    used: int = 0
    capacity: int = 0
    needed: int | None = None  # a mode with an operator: addresses the node asks it for
    error: str | None = None  # why the pool cannot give this node more
    pool_cidrs: tuple[str, ...] = ()  # the whole pool, where the mode knows it
    exhausted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "family": self.family,
            "cidrs": list(self.cidrs),
            "used": self.used,
            "capacity": self.capacity,
            "needed": self.needed,
            "error": self.error,
            "poolCIDRs": list(self.pool_cidrs),
            "exhausted": self.exhausted,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PoolUse:
        error = text(doc.get("error"))
        return cls(
            pool=str(doc.get("pool") or "default"),
            family=integer(doc.get("family"), 4) or 4,
            cidrs=texts(doc.get("cidrs")),
            used=integer(doc.get("used")) or 0,
            capacity=integer(doc.get("capacity")) or 0,
            needed=integer(doc.get("needed"), None),
            error=error,
            pool_cidrs=texts(doc.get("poolCIDRs")),
            # an agent from before the flag: its error said so
            exhausted=bool(doc["exhausted"]) if "exhausted" in doc else "exhausted" in (error or ""),
        )


@dataclass(frozen=True)
class IpamStatus:
    mode: str = ""  # ipam.mode
    pod_cidrs: tuple[str, ...] = ()
    used: int = 0  # IPv4 addresses in use
    free: int = 0
    total: int = 0
    allocations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # owner -> addresses
    pools: tuple[PoolUse, ...] | None = None  # None: an agent from before pools were reported
    router_ips: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "mode": self.mode,
            "podCIDRs": list(self.pod_cidrs),
            "used": self.used,
            "free": self.free,
            "total": self.total,
            "allocations": {owner: list(a) for owner, a in self.allocations.items()},
        }
        if self.pools is not None:
            doc["pools"] = [p.to_json() for p in self.pools]
        doc["routerIPs"] = list(self.router_ips)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> IpamStatus | None:
        if not doc:
            return None
        pools = doc.get("pools")
        return cls(
            mode=str(doc.get("mode") or ""),
            pod_cidrs=texts(doc.get("podCIDRs")),
            used=integer(doc.get("used")) or 0,
            free=integer(doc.get("free")) or 0,
            total=integer(doc.get("total")) or 0,
            allocations={str(k): texts(v) for k, v in section(doc.get("allocations")).items()},
            pools=None if pools is None else tuple(PoolUse.from_json(p) for p in sections(pools)),
            router_ips=texts(doc.get("routerIPs")),
        )


@dataclass(frozen=True)
class FailedAdd:
    """A CNI ADD that failed: the pod, and the CNI error the runtime got."""

    pod: str  # "<namespace>/<name>", "" when the runtime did not say
    container_id: str = ""
    code: int | None = None
    msg: str | None = None
    details: str | None = None
    at: float = 0.0

    def names(self, pod: str) -> bool:
        """Whether this is ``pod`` (``name`` or ``namespace/name``)."""
        return pod in (self.pod, self.pod.split("/")[-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "containerID": self.container_id,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FailedAdd:
        return cls(
            pod=str(doc.get("pod") or ""),
            container_id=str(doc.get("containerID") or ""),
            code=integer(doc.get("code"), None),
            msg=optional(doc.get("msg")),
            details=optional(doc.get("details")),
            at=number(doc.get("at")) or 0.0,
        )
