"""IPAM mode ``cluster-pool``: the operator carves node CIDRs, the node allocates pods inside them.

The node waits for ``/podnet/v1/podcidrs/<node>`` (written by ``podnet operator``) and then hands out
addresses with one ``HostAllocator`` per CIDR, the first CIDR of a family with room first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from podnet.ipam.base import Allocation, IPAMContext, PodRef, PoolUsage, register_mode
from podnet.ipam.host import HostAllocator, IPAMExhausted
from podnet.model import IPAddress, IPNetwork

MODE = "cluster-pool"


class MultiCIDRAllocator:
    """An ``Allocator`` over fixed pod CIDRs (one address per family per owner)."""

    def __init__(self, cidrs: Sequence[IPNetwork]) -> None:
        if not cidrs:
            raise ValueError("no pod CIDR given: the node cannot allocate pod addresses")
        self._hosts = tuple(HostAllocator(c) for c in cidrs)

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        return tuple(h.cidr for h in self._hosts)

    def router_ips(self) -> tuple[IPAddress, ...]:
        return tuple(h.router_ip for h in self._hosts)

    def allocate(self, owner: str, pod: PodRef | None = None) -> tuple[Allocation, ...]:
        result = []
        for family in sorted({h.cidr.version for h in self._hosts}):
            host = self._holding(owner, family) or self._with_room(family)
            ip = host.allocate(owner)
            result.append(Allocation(ip=ip, cidr=host.cidr, gateway=host.router_ip))
        return tuple(result)

    def release(self, owner: str) -> bool:
        released = [h.release(owner) for h in self._hosts]
        return any(ip is not None for ip in released)

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None:
        for owner, ips in allocations.items():
            for ip in ips:
                host = next((h for h in self._hosts if ip in h.cidr), None)
                if host is None:
                    raise ValueError(
                        f"cannot restore {ip} of {owner}: it is in none of the node's pod CIDRs "
                        f"({', '.join(str(c) for c in self.cidrs)})"
                    )
                host.allocate(owner, ip)

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]:
        merged: dict[str, tuple[IPAddress, ...]] = {}
        for host in self._hosts:
            for owner, ip in host.allocated().items():
                merged[owner] = (*merged.get(owner, ()), ip)
        return merged

    def free(self, family: int) -> int:
        return sum(h.free_count() for h in self._hosts if h.cidr.version == family)

    def usage(self) -> tuple[PoolUsage, ...]:
        return tuple(when_full(use) for use in host_usage("default", self._hosts))

    def problems(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def _holding(self, owner: str, family: int) -> HostAllocator | None:
        return next(
            (h for h in self._hosts if h.cidr.version == family and owner in h.allocated()),
            None,
        )

    def _with_room(self, family: int) -> HostAllocator:
        hosts = [h for h in self._hosts if h.cidr.version == family]
        for host in hosts:
            if host.free_count() > 0:
                return host
        sizes = ", ".join(f"{h.cidr} ({h.capacity()} addresses)" for h in hosts)
        raise IPAMExhausted(f"all IPv{family} pod CIDRs of this node are full: {sizes}")


def host_usage(pool: str, hosts: Sequence[HostAllocator]) -> tuple[PoolUsage, ...]:
    """One ``PoolUsage`` per family over ``hosts`` (the CIDRs a node holds of one pool)."""
    found = []
    for family in sorted({h.cidr.version for h in hosts}):
        mine = [h for h in hosts if h.cidr.version == family]
        found.append(
            PoolUsage(
                pool=pool,
                family=family,
                cidrs=tuple(h.cidr for h in mine),
                used=sum(len(h.allocated()) for h in mine),
                capacity=sum(h.capacity() for h in mine),
            )
        )
    return tuple(found)


def when_full(use: PoolUsage) -> PoolUsage:
    """``use`` marked exhausted when every address of its fixed CIDRs is in use (nothing gives
    the node more: cluster-pool and kubernetes hand out one pod CIDR per family)."""
    if use.capacity == 0 or use.used < use.capacity:
        return use
    cidrs = ", ".join(str(c) for c in use.cidrs)
    return replace(
        use,
        exhausted=True,
        error=f"exhausted: all {use.capacity} addresses of {cidrs} in use; delete pods or give the node "
        "another pod CIDR",
    )


def _factory(ctx: IPAMContext) -> MultiCIDRAllocator:
    return MultiCIDRAllocator(ctx.datastore.wait_pod_cidrs(ctx.node_name, ctx.wait_timeout))


register_mode(MODE, _factory)
