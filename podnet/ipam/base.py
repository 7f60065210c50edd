"""The node-side IPAM interface; modes register a factory under their ``ipam.mode`` value.

One ``Allocator`` per node gives pod addresses, each with the gateway the pod routes through
(host-local's result shape). How the node gets its addresses is what differs between modes
(cluster-pool: the podnet operator carves pod CIDRs; later kubernetes, multi-pool, crd, eni). A
mode module registers its factory in ``podnet.registry.IPAM_MODES``; ``podnet.ipam.modes`` imports
the built-in ones. Asking for a mode that is not registered fails with the supported ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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


class Allocator(Protocol):
    """Pod address allocation on one node: idempotent per owner, restorable after a restart."""

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]: ...

    def router_ips(self) -> tuple[IPAddress, ...]: ...

    def allocate(self, owner: str) -> tuple[Allocation, ...]:
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


@dataclass(frozen=True)
class IPAMContext:
    """What a mode's factory may use to build a node's allocator."""

    datastore: Datastore  # the pod CIDRs the operator gave the node (cluster-pool)
    node_name: str
    wait_timeout: float = 60.0


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
