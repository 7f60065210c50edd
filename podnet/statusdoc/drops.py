"""The agent's drops: the ``drops`` section of its status (counts by reason: podnet's own drop
events, the kernel's counters of the namespace, the pod veths') and its ``drops`` API answer
(the events one by one, which ``podnet drops`` lists and follows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import counts, integer, number, section, sections, text, texts

RECENT_WINDOW = 300.0  # seconds; what an agent that does not say its window used


@dataclass(frozen=True)
class DropCounters:
    events: bool = False  # bpf.events.drop.enabled
    error: str | None = None
    by_reason: Mapping[str, int] = field(default_factory=dict)  # podnet's drop events since start
    kernel: Mapping[str, int] = field(default_factory=dict)  # the kernel's counters, those not 0
    kernel_recent: Mapping[str, int] | None = None  # their rises within the window (None: older agent)
    recent_window: float = RECENT_WINDOW
    endpoints: Mapping[str, int] = field(default_factory=dict)  # pod veths' dropped packets

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "error": self.error,
            "byReason": dict(self.by_reason),
            "kernel": dict(self.kernel),
            "kernelRecent": None if self.kernel_recent is None else dict(self.kernel_recent),
            "recentWindow": self.recent_window,
            "endpoints": dict(self.endpoints),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> DropCounters | None:
        """None for an agent from before the drop monitor."""
        if not doc:
            return None
        recent = doc.get("kernelRecent")
        return cls(
            events=bool(doc.get("events")),
            error=text(doc.get("error")),
            by_reason=counts(doc.get("byReason")),
            kernel=counts(doc.get("kernel")),
            kernel_recent=counts(recent) if recent is not None else None,
            recent_window=number(doc.get("recentWindow")) or RECENT_WINDOW,
            endpoints=counts(doc.get("endpoints")),
        )


@dataclass(frozen=True)
class DropEvent:
    """One packet podnet dropped (the pod guard's or the policy table's NFLOG record)."""

    seq: int
    time: float
    reason: str
    in_dev: str = ""
    out_dev: str = ""
    family: int = 4
    src: str = ""
    dst: str = ""
    proto: str = ""
    sport: int | None = None
    dport: int | None = None
    direction: str | None = None  # a policy drop: ingress | egress
    policies: tuple[str, ...] | None = None  # a policy drop: the policies that isolate the pod

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "seq": self.seq,
            "time": self.time,
            "reason": self.reason,
            "in": self.in_dev,
            "out": self.out_dev,
            "family": self.family,
            "src": self.src,
            "dst": self.dst,
            "proto": self.proto,
            "sport": self.sport,
            "dport": self.dport,
        }
        if self.direction is not None:
            doc["direction"] = self.direction
        if self.policies is not None:
            doc["policies"] = list(self.policies)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DropEvent:
        return cls(
            seq=integer(doc.get("seq")) or 0,
            time=number(doc.get("time")) or 0.0,
            reason=str(doc.get("reason") or ""),
            in_dev=str(doc.get("in") or ""),
            out_dev=str(doc.get("out") or ""),
            family=integer(doc.get("family"), 4) or 4,
            src=str(doc.get("src") or ""),
            dst=str(doc.get("dst") or ""),
            proto=str(doc.get("proto") or ""),
            sport=integer(doc.get("sport"), None),
            dport=integer(doc.get("dport"), None),
            direction=text(doc.get("direction")),
            policies=texts(doc["policies"]) if doc.get("policies") is not None else None,
        )


@dataclass(frozen=True)
class DropEvents:
    """The answer to ``{"op": "drops", "since": n}``: the kept events after ``n``, and the cursor."""

    enabled: bool = True
    events: tuple[DropEvent, ...] = ()
    next: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "events": [e.to_json() for e in self.events],
            "next": self.next,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> DropEvents:
        doc = section(doc)
        return cls(
            enabled=bool(doc.get("enabled", True)),
            events=tuple(DropEvent.from_json(e) for e in sections(doc.get("events"))),
            next=integer(doc.get("next")) or 0,
            error=text(doc.get("error")),
        )
