"""The planner's vocabulary and the one interface a routing mode supplies.

Everything here is a frozen dataclass compared by value (the kernel objects themselves live in
``podnet.datapath.objects``), so ``diff(current, desired)`` is a set operation. A routing mode
answers "does this node tunnel, and with what?" (``tunnel``) and "what does the kernel need to
reach this peer's pods?" (``plan_peer``); the planner (``podnet.datapath.plan``) does the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from podnet.config import AgentConfig
from podnet.datapath.objects import FdbEntry, Neighbour, PeerPath, Route, Rule, family_of
from podnet.datapath.tunnels import TunnelProtocol
from podnet.model import IPAddress, NodeInfo

__all__ = ["DesiredState", "FdbEntry", "LocalNode", "Neighbour", "PeerIssue", "PeerPath", "PeerPlan", "Reach",
           "Route", "RoutingMode", "Rule", "Severity", "family_of", "node_ip_for"]  # fmt: skip


class Severity(enum.StrEnum):
    WARNING = "warning"
    ERROR = "error"


class Reach(enum.StrEnum):
    """How this node reaches a peer's pods, for ``podnet status``."""

    TUNNEL = "tunnel"  # encapsulated through the tunnel device
    DIRECT = "direct-route"  # a route via the peer's node IP on the underlay device
    UNDERLAY = "underlay"  # nothing per peer: the underlay's routers (BGP, static) carry pod CIDRs
    UNREACHABLE = "unreachable"  # podnet installed nothing for it; see the peer's issues


@dataclass(frozen=True)
class PeerIssue:
    """Something wrong with one peer; never stops the planning of the others."""

    peer: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class LocalNode:
    """This node as the planner sees it: its cluster record plus its underlay device."""

    node: NodeInfo
    underlay_dev: str
    underlay_ifindex: int
    underlay_mtu: int
    protocol: int | None = None  # underlayProtocol (4 or 6); None: IPv4 when the node has it

    @property
    def underlay_family(self) -> int:
        if self.protocol is not None:
            return self.protocol
        return 4 if self.node.ipv4 is not None else 6


@dataclass(frozen=True)
class PeerPlan:
    """What one routing mode wants for one peer."""

    reach: Reach
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    issues: tuple[PeerIssue, ...] = ()
    reason: str = ""  # why this path was chosen, for `podnet status` (hybrid mode says it)


@dataclass(frozen=True)
class DesiredState:
    """The whole desired per-peer datapath of one node, sorted so equal plans compare equal."""

    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    rules: tuple[Rule, ...] = ()
    issues: tuple[PeerIssue, ...] = ()
    reach: tuple[tuple[str, Reach], ...] = ()
    reasons: tuple[tuple[str, str], ...] = ()
    route_mtu: int = 0
    tunnel_device: str | None = None  # the tunnel device in use, None in native mode

    def reach_of(self, peer: str) -> Reach | None:
        return dict(self.reach).get(peer)

    def errors(self) -> tuple[PeerIssue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.ERROR)


class RoutingMode(Protocol):
    """A routing mode, registered under its ``name``; ``applies`` says which configs it plans for
    (exactly one registered mode applies to a valid config)."""

    name: str
    routing_mode: str  # the routingMode value it serves ("native" for the hybrid too)

    def applies(self, config: AgentConfig) -> bool:
        """True when this mode plans for ``config``."""
        ...

    def tunnel(self, config: AgentConfig) -> TunnelProtocol | None:
        """The tunnel protocol this node sends with, or None when it never encapsulates."""
        ...

    def plan_peer(
        self,
        local: LocalNode,
        peer: NodeInfo,
        paths: Mapping[str, PeerPath],
        config: AgentConfig,
        route_mtu: int,
    ) -> PeerPlan:
        """Routes/neighbours/FDB entries needed to reach ``peer``'s pod CIDRs.
        ``paths`` is keyed by the peer node IP as a string (``str(peer.ipv4)``)."""
        ...

    def needs_paths(self, config: AgentConfig) -> bool:
        """Whether ``plan_peer`` looks at ``ip route get <peer ip>`` (the agent then asks the kernel)."""
        ...


def node_ip_for(node: NodeInfo, family: int) -> IPAddress | None:
    """The node's underlay address of one IP family."""
    return node.ipv4 if family == 4 else node.ipv6
