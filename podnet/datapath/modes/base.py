"""The planner's vocabulary: desired kernel objects and the one interface a routing mode supplies.

Everything here is a frozen dataclass compared by value, so ``diff(current, desired)`` is a set
operation. A routing mode answers one question, "what does the kernel need to reach this peer's
pods?", through ``RoutingMode.plan_peer``; the planner (``podnet.datapath.plan``) does the rest.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from podnet import owned
from podnet.model import IPAddress, IPNetwork, NodeInfo

if TYPE_CHECKING:
    from podnet.config import AgentConfig


@dataclass(frozen=True, order=True)
class Route:
    """One route in the main table, e.g. ``10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink
    src 10.244.1.1 mtu 1450 proto 201``. A route is identified by ``dst`` alone (main table)."""

    dst: IPNetwork
    dev: str
    gateway: IPAddress | None = None
    onlink: bool = False
    src: IPAddress | None = None
    mtu: int | None = None
    protocol: int = owned.ROUTE_PROTOCOL

    def describe(self) -> str:
        """The ``ip route`` line this route stands for."""
        parts = [str(self.dst)]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        parts.append(f"dev {self.dev}")
        if self.onlink:
            parts.append("onlink")
        if self.src is not None:
            parts.append(f"src {self.src}")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        parts.append(f"proto {self.protocol}")
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class Neighbour:
    """A permanent neighbour entry: ``ip neigh replace <dst> lladdr <lladdr> dev <dev> nud permanent``."""

    dst: IPAddress
    lladdr: str
    dev: str

    def describe(self) -> str:
        return f"{self.dst} lladdr {self.lladdr} dev {self.dev} permanent"


@dataclass(frozen=True, order=True)
class FdbEntry:
    """A VXLAN forwarding entry: ``bridge fdb replace <lladdr> dst <dst> dev <dev> self permanent``."""

    lladdr: str
    dst: IPAddress
    dev: str

    def describe(self) -> str:
        return f"{self.lladdr} dst {self.dst} dev {self.dev} self permanent"


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
class PeerPath:
    """What ``ip route get <peer node ip>`` said: the device and, if not on-link, the gateway."""

    dst: IPAddress
    dev: str | None
    gateway: IPAddress | None = None
    src: IPAddress | None = None

    @property
    def direct(self) -> bool:
        return self.gateway is None


@dataclass(frozen=True)
class LocalNode:
    """This node as the planner sees it: its cluster record plus its underlay device."""

    node: NodeInfo
    underlay_dev: str
    underlay_ifindex: int
    underlay_mtu: int

    @property
    def underlay_family(self) -> int:
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
    """A routing mode, registered under its ``routingMode`` value."""

    name: str

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

    def tunnel_device(self, config: AgentConfig) -> str | None:
        """The tunnel device this mode needs on the node, or None."""
        ...

    def needs_paths(self, config: AgentConfig) -> bool:
        """Whether ``plan_peer`` looks at ``ip route get <peer ip>`` (the agent then asks the kernel)."""
        ...


def node_ip_for(node: NodeInfo, family: int) -> IPAddress | None:
    """The node's underlay address of one IP family."""
    return node.ipv4 if family == 4 else node.ipv6


def family_of(network: IPNetwork) -> int:
    return 4 if isinstance(network, ipaddress.IPv4Network) else 6
