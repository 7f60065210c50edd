"""The node-side IPAM interface; modes register a factory under their ``ipam.mode`` value.

One ``Allocator`` per node gives pod addresses, each with the gateway the pod routes through
(host-local's result shape). How the node gets its addresses is what differs between modes
(the operator carves pod CIDRs, kube-controller-manager does, someone fills the node's address
pool, CIDRs are asked for as pods come ...). A mode module registers its factory in
``podnet.registry.IPAM_MODES``; ``podnet.ipam.modes`` imports the built-in ones. Asking for a
mode that is not registered fails with the supported ones.

Design fact: a mode whose CIDRs grow while the agent runs calls
``IPAMContext.prepare`` with the new router IPs *before* it hands out an address behind them (the
node must answer the pod's ARP for its gateway from the first packet), then ``changed`` so the
agent publishes the node's new CIDRs to its peers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from podnet.model import IPAddress, IPNetwork
from podnet.registry import IPAM_MODES, UnknownChoice

if TYPE_CHECKING:
    from podnet.store.datastore import Datastore


@dataclass(frozen=True)
class Allocation:
    """One pod address with the CIDR it came from and the gateway the pod routes through."""

    ip: IPAddress
    cidr: IPNetwork
    gateway: IPAddress

    @property
    def family(self) -> int:
        return self.ip.version


@dataclass(frozen=True)
class PodRef:
    """The pod an address is for, as the API server describes it (never as the pod says):
    a mode may pick a pool from its annotations, or record ``namespace/name`` as the owner."""

    namespace: str = ""
    name: str = ""
    annotations: tuple[tuple[str, str], ...] = ()
    namespace_annotations: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.name else ""


@dataclass(frozen=True)
class PoolUsage:
    """One pool's use on this node, per family (``podnet status``'s IPAM line, ``podnet ipam``)."""

    pool: str  # "default" in single-pool modes
    family: int
    cidrs: tuple[IPNetwork, ...]  # what this node holds of the pool
    used: int
    capacity: int
    needed: int | None = None  # a mode whose CIDRs grow: addresses the node asks the operator for
    error: str = ""  # why the pool cannot give this node more (exhausted, unknown pool)
    pool_cidrs: tuple[IPNetwork, ...] = ()  # the whole pool, where the mode knows it
    exhausted: bool = False  # no free address, and the mode gives this node no more: ADDs fail

    def to_json(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "family": self.family,
            "cidrs": [str(c) for c in self.cidrs],
            "used": self.used,
            "capacity": self.capacity,
            "needed": self.needed,
            "error": self.error or None,
            "poolCIDRs": [str(c) for c in self.pool_cidrs],
            "exhausted": self.exhausted,
        }


class Allocator(Protocol):
    """Pod address allocation on one node: idempotent per owner, restorable after a restart."""

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        """Every CIDR peers must route to this node (all pools; crd: its addresses collapsed)."""
        ...

    def router_ips(self) -> tuple[IPAddress, ...]: ...

    def allocate(self, owner: str, pod: PodRef | None = None) -> tuple[Allocation, ...]:
        """One address per IP family for ``owner``; the same ones when asked again."""
        ...

    def release(self, owner: str) -> bool:
        """Free the addresses of ``owner``; True if it held any. Releasing twice is fine."""
        ...

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None:
        """Take back what owners held before a restart; an address it cannot hold raises."""
        ...

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]:
        """owner -> its addresses, a copy."""
        ...

    def free(self, family: int) -> int:
        """How many more addresses of one family (4 or 6) can be handed out now."""
        ...

    def usage(self) -> tuple[PoolUsage, ...]:
        """Per pool and family: the node's CIDRs, use and capacity, and what stops it growing."""
        ...

    def problems(self) -> list[str]:
        """What the agent's status must report (an address in use that left its pool, ...)."""
        ...

    def close(self) -> None:
        """Stop watching the datastore; allocations stay as they are."""
        ...


@dataclass(frozen=True)
class IPAMContext:
    """What a mode's factory may use to build a node's allocator."""

    datastore: Datastore  # the pod CIDRs the operator gave the node (cluster-pool)
    node_name: str
    wait_timeout: float = 60.0
    prepare: Callable[[tuple[IPAddress, ...]], None] = field(default=lambda ips: None)
    changed: Callable[[], None] = field(default=lambda: None)
    settings: Mapping[str, Any] = field(default_factory=dict)  # the mode's own (IpamSpec.settings), by name
    node_ip: IPAddress | None = None  # the node's underlay IPv4 address (how a provider may find the node)
    cluster_pools: tuple[IPNetwork, ...] = ()  # clusterPoolIPv4PodCIDRList, for a mode that carves its own
    mask_size: int = 24  # clusterPoolIPv4MaskSize


AllocatorFactory = Callable[[IPAMContext], Allocator]


class UnsupportedIPAMMode(ValueError):
    """``ipam.mode`` names a mode that podnet does not implement (yet)."""


def register_mode(mode: str, factory: AllocatorFactory) -> None:
    IPAM_MODES.register(mode, factory)


def supported_modes() -> tuple[str, ...]:
    return IPAM_MODES.names()


def factory_for(mode: str) -> AllocatorFactory:
    """The factory of ``mode``, or ``UnsupportedIPAMMode`` listing the supported modes."""
    try:
        factory: AllocatorFactory = IPAM_MODES.get(mode)
    except UnknownChoice:
        raise UnsupportedIPAMMode(
            f"IPAM mode {mode!r} is not supported; supported modes: {', '.join(supported_modes())}"
        ) from None
    return factory


def new_allocator(mode: str, ctx: IPAMContext) -> Allocator:
    return factory_for(mode)(ctx)
