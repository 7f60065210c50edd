"""The agent's whole status document (``{"op": "status"}``): one typed section per part, in the
order ``-o json`` readers know. The agent builds it (``podnet.agent.status``) and serves
``to_json()``; ``podnet status``, ``diagnose``, ``ipam``, ``bgp`` and the rest read it back with
``from_json``, which also reads a lab's stand-in for an agent that does not answer
(``{"error": ...}``, see ``unanswered``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.bgp import BgpStatus
from podnet.statusdoc.datastore import ETCD, KUBERNETES, StoreHealth
from podnet.statusdoc.drops import DropCounters
from podnet.statusdoc.endpoints import EndpointsStatus
from podnet.statusdoc.guard import GuardStatus
from podnet.statusdoc.hostrouting import HostRoutingStatus
from podnet.statusdoc.ipam import FailedAdd, IpamStatus
from podnet.statusdoc.masquerade import MasqueradeStatus
from podnet.statusdoc.modesection import ModeSection
from podnet.statusdoc.node import NodeIdentity
from podnet.statusdoc.pathmtu import PathMtuStatus
from podnet.statusdoc.peers import PeerPlan, PlannedRoute
from podnet.statusdoc.policy import PolicyStatus
from podnet.statusdoc.routing import LastRound, MtuStatus, RoutingStatus
from podnet.statusdoc.values import integer, number, section, sections, texts

# the document's own keys: an IPAM mode named like one of them (``kubernetes``) has no section
KEYS = frozenset(
    {
        "ready",
        "phase",
        "node",
        "datastore",
        "kvstore",
        "kubernetes",
        "routing",
        "masquerade",
        "guard",
        "endpoints",
        "errors",
        "reconciles",
        "lastReconcile",
        "lastRound",
        "mtu",
        "ipam",
        "peers",
        "routes",
        "pathMTU",
        "bgp",
        "hostRouting",
        "drops",
        "policy",
        "failedAdds",
        "error",
    }
)


def mode_section_key(ipam_mode: str) -> str | None:
    """The key of the IPAM mode's own section: its name, unless the document uses that key."""
    return ipam_mode if ipam_mode and ipam_mode not in KEYS else None


@dataclass(frozen=True)
class StatusDocument:
    ready: bool = False
    phase: str = "starting"
    node: NodeIdentity | None = None
    datastore: str = ETCD
    kvstore: StoreHealth = field(default_factory=StoreHealth.disabled)
    kubernetes: StoreHealth = field(default_factory=StoreHealth.disabled)
    routing: RoutingStatus = field(default_factory=RoutingStatus)
    masquerade: MasqueradeStatus = field(default_factory=MasqueradeStatus)
    guard: GuardStatus = field(default_factory=GuardStatus)
    endpoints: EndpointsStatus = field(default_factory=EndpointsStatus)
    errors: tuple[str, ...] = ()
    reconciles: int = 0
    last_reconcile: float = 0.0
    last_round: LastRound = field(default_factory=LastRound)
    mtu: MtuStatus | None = None  # None before the node's devices are set up
    ipam: IpamStatus | None = None  # None before the allocator is ready
    peers: tuple[PeerPlan, ...] | None = None  # None (and no routes) before the first round
    routes: tuple[PlannedRoute, ...] = ()
    path_mtu: PathMtuStatus = field(default_factory=PathMtuStatus)
    bgp: BgpStatus = field(default_factory=BgpStatus)
    host_routing: HostRoutingStatus = field(default_factory=HostRoutingStatus)
    drops: DropCounters | None = None
    policy: PolicyStatus = field(default_factory=PolicyStatus)
    mode_section: ModeSection | None = None  # the IPAM mode's own section, under its name
    failed_adds: tuple[FailedAdd, ...] | None = None  # the CNI handler's; None: not reported
    unanswered: str = ""  # the agent did not answer: why (nothing else is known)

    @property
    def name(self) -> str:
        return self.node.name if self.node is not None else ""

    def to_json(self) -> dict[str, Any]:
        if self.unanswered:
            return {"error": self.unanswered}
        doc: dict[str, Any] = {
            "ready": self.ready,
            "phase": self.phase,
            "node": self.node.to_json() if self.node is not None else None,
            "datastore": self.datastore,
            "kvstore": self.kvstore.to_json(),
            "kubernetes": self.kubernetes.to_json(),
            "routing": self.routing.to_json(),
            "masquerade": self.masquerade.to_json(),
            "guard": self.guard.to_json(),
            "endpoints": self.endpoints.to_json(),
            "errors": list(self.errors),
            "reconciles": self.reconciles,
            "lastReconcile": self.last_reconcile,
            "lastRound": self.last_round.to_json(),
        }
        if self.mtu is not None:
            doc["mtu"] = self.mtu.to_json()
        if self.ipam is not None:
            doc["ipam"] = self.ipam.to_json()
        if self.peers is not None:
            doc["peers"] = [p.to_json() for p in self.peers]
            doc["routes"] = [r.to_json() for r in self.routes]
        doc |= {
            "pathMTU": self.path_mtu.to_json(),
            "bgp": self.bgp.to_json(),
            "hostRouting": self.host_routing.to_json(),
            "drops": self.drops.to_json() if self.drops is not None else None,
            "policy": self.policy.to_json(),
        }
        if self.mode_section is not None:
            doc[self.mode_section.name] = self.mode_section.to_json()
        if self.failed_adds is not None:
            doc["failedAdds"] = [f.to_json() for f in self.failed_adds]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> StatusDocument:
        doc = section(doc)
        if "error" in doc and "ready" not in doc:
            return cls(unanswered=str(doc["error"]))
        ipam = IpamStatus.from_json(doc.get("ipam"))
        peers = doc.get("peers")
        failed = doc.get("failedAdds")
        return cls(
            ready=bool(doc.get("ready")),
            phase=str(doc.get("phase") or "starting"),
            node=NodeIdentity.from_json(doc.get("node")),
            datastore=str(doc.get("datastore") or ETCD),
            kvstore=StoreHealth.from_json(doc.get("kvstore"), ETCD),
            kubernetes=StoreHealth.from_json(doc.get("kubernetes"), KUBERNETES),
            routing=RoutingStatus.from_json(doc.get("routing")),
            masquerade=MasqueradeStatus.from_json(doc.get("masquerade")),
            guard=GuardStatus.from_json(doc.get("guard")),
            endpoints=EndpointsStatus.from_json(doc.get("endpoints")),
            errors=texts(doc.get("errors")),
            reconciles=integer(doc.get("reconciles")) or 0,
            last_reconcile=number(doc.get("lastReconcile")) or 0.0,
            last_round=LastRound.from_json(doc.get("lastRound")),
            mtu=MtuStatus.from_json(doc.get("mtu")),
            ipam=ipam,
            peers=None if peers is None else tuple(PeerPlan.from_json(p) for p in sections(peers)),
            routes=tuple(PlannedRoute.from_json(r) for r in sections(doc.get("routes"))),
            path_mtu=PathMtuStatus.from_json(doc.get("pathMTU")),
            bgp=BgpStatus.from_json(doc.get("bgp")),
            host_routing=HostRoutingStatus.from_json(doc.get("hostRouting")),
            drops=DropCounters.from_json(doc.get("drops")),
            policy=PolicyStatus.from_json(doc.get("policy")),
            mode_section=_mode_section(ipam, doc),
            failed_adds=None if failed is None else tuple(FailedAdd.from_json(f) for f in sections(failed)),
        )


def _mode_section(ipam: IpamStatus | None, doc: Mapping[str, Any]) -> ModeSection | None:
    key = mode_section_key(ipam.mode) if ipam is not None else None
    return ModeSection.from_json(key, doc.get(key)) if key else None
