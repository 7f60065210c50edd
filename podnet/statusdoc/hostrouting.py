"""The agent's ``hostRouting`` section: Cilium's ``Host Routing: BPF`` or ``Legacy``; with BPF the
program on the pods' veths, its map fill and counters, and each tunnel protocol's decap program
(``podnet.datapath.hostrouting.stats`` reads them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import counts, integer, section, sections, texts

BPF, LEGACY = "BPF", "Legacy"


@dataclass(frozen=True)
class BpfProgram:
    id: int
    object: str  # the object file's name

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": self.object}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> BpfProgram | None:
        if not doc:
            return None
        return cls(integer(doc.get("id")) or 0, str(doc.get("object") or ""))


@dataclass(frozen=True)
class DecapProgram:
    """A tunnel protocol's decap program on its device's ingress, next to host routing."""

    protocol: str
    program: BpfProgram
    dev: str
    allowed: int = 0  # peers whose tunnel packets it takes
    counters: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "program": self.program.to_json(),
            "dev": self.dev,
            "allowed": self.allowed,
            "counters": dict(self.counters),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DecapProgram:
        return cls(
            protocol=str(doc.get("protocol") or "tunnel"),
            program=BpfProgram.from_json(section(doc.get("program"))) or BpfProgram(0, ""),
            dev=str(doc.get("dev") or ""),
            allowed=integer(doc.get("allowed")) or 0,
            counters=counts(doc.get("counters")),
        )


@dataclass(frozen=True)
class HostRoutingStats:
    """What the kernel has: the program (None: not attached), where, its maps and counters."""

    program: BpfProgram | None = None
    devices: tuple[str, ...] = ()  # pod veths
    underlay_devices: tuple[str, ...] = ()
    endpoints: int = 0
    learnt_macs: int = 0
    cluster_cidrs: int = 0
    tunnel_peers: int = 0
    underlay: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    decap: tuple[DecapProgram, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.program is None:
            return {"program": None}
        return {
            "program": self.program.to_json(),
            "devices": list(self.devices),
            "underlayDevices": list(self.underlay_devices),
            "endpoints": self.endpoints,
            "learntMACs": self.learnt_macs,
            "clusterCIDRs": self.cluster_cidrs,
            "tunnelPeers": self.tunnel_peers,
            "underlay": self.underlay,
            "counters": dict(self.counters),
            "decap": [d.to_json() for d in self.decap],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HostRoutingStats:
        return cls(
            program=BpfProgram.from_json(section(doc.get("program"))),
            devices=texts(doc.get("devices")),
            underlay_devices=texts(doc.get("underlayDevices")),
            endpoints=integer(doc.get("endpoints")) or 0,
            learnt_macs=integer(doc.get("learntMACs")) or 0,
            cluster_cidrs=integer(doc.get("clusterCIDRs")) or 0,
            tunnel_peers=integer(doc.get("tunnelPeers")) or 0,
            underlay=integer(doc.get("underlay")) or 0,
            counters=counts(doc.get("counters")),
            decap=tuple(DecapProgram.from_json(d) for d in sections(doc.get("decap"))),
        )


@dataclass(frozen=True)
class HostRoutingStatus:
    mode: str = LEGACY  # BPF | Legacy
    errors: tuple[str, ...] | None = None  # None: no host routing component reported
    fallback: str = ""  # why BPF was asked for and the kernel routes instead
    stats: HostRoutingStats | None = None  # BPF: what the kernel has (None: it could not be read)

    @property
    def bpf(self) -> bool:
        return self.mode == BPF

    @property
    def program(self) -> BpfProgram | None:
        return self.stats.program if self.stats is not None else None

    def to_json(self) -> dict[str, Any]:
        if self.errors is None:
            return {"mode": self.mode}
        doc: dict[str, Any] = {"mode": self.mode, "errors": list(self.errors)}
        if self.fallback:
            doc["fallback"] = self.fallback
        if self.stats is not None:
            doc.update(self.stats.to_json())
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> HostRoutingStatus:
        doc = section(doc)
        return cls(
            mode=str(doc.get("mode") or LEGACY),
            errors=texts(doc.get("errors")) if "errors" in doc else None,
            fallback=str(doc.get("fallback") or ""),
            stats=HostRoutingStats.from_json(doc) if "program" in doc else None,
        )
