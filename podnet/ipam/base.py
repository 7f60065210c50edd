"""The node-side IPAM interface and the registry of IPAM modes keyed by the ``ipam.mode`` value.

One ``Allocator`` per node gives pod addresses out of the node's pod CIDRs. How the node gets
those CIDRs is what differs between modes (cluster-pool: the podnet operator carves them;
later kubernetes, multi-pool, crd, eni). A mode registers a factory here; asking for a mode that
is not registered fails with the list of the supported ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from podnet.model import IPAddress, IPNetwork

if TYPE_CHECKING:
    from podnet.store.client import Store


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

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None: ...

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]: ...


@dataclass(frozen=True)
class IPAMContext:
    """What a mode's factory may use to build a node's allocator."""

    store: Store
    node_name: str
    wait_timeout: float = 60.0


AllocatorFactory = Callable[[IPAMContext], Allocator]

_MODES: dict[str, AllocatorFactory] = {}


class UnsupportedIPAMMode(ValueError):
    """``ipam.mode`` names a mode that podnet does not implement (yet)."""


def register_mode(mode: str, factory: AllocatorFactory) -> None:
    _MODES[mode] = factory


def supported_modes() -> tuple[str, ...]:
    _load_builtin_modes()
    return tuple(sorted(_MODES))


def factory_for(mode: str) -> AllocatorFactory:
    """The factory of ``mode``, or ``UnsupportedIPAMMode`` listing the supported modes."""
    _load_builtin_modes()
    try:
        return _MODES[mode]
    except KeyError:
        raise UnsupportedIPAMMode(
            f"IPAM mode {mode!r} is not supported; supported modes: {', '.join(sorted(_MODES))}"
        ) from None


def new_allocator(mode: str, ctx: IPAMContext) -> Allocator:
    return factory_for(mode)(ctx)


def _load_builtin_modes() -> None:
    # Importing a mode module registers it (flannel's backend manager does the same).
    from podnet.ipam import cluster_pool  # noqa: F401
