"""Multi-pool IPAM, the pure part: which pool a pod takes, how many addresses a node asks for,
which CIDRs it can give back, and what a pool resource says (shared by agent and operator).

Design fact (Cilium's multi-pool semantics): a pod's pool is its ``ipam.podnet.io/ip-pool``
annotation (Cilium's ``ipam.cilium.io/ip-pool`` accepted), else its namespace's, else
``default``; it is read once, when the pod is created. A node asks for
``needed = roundUp(inUse + pending + preAlloc, preAlloc)`` addresses per pool and family
(preAlloc defaults to 8), and the operator gives it CIDRs of the pool's mask size until their
capacity covers that.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from podnet.ipam.base import PodRef
from podnet.model import IPNetwork

POOL_ANNOTATIONS = ("ipam.podnet.io/ip-pool", "ipam.cilium.io/ip-pool")
DEFAULT_POOL = "default"
DEFAULT_PRE_ALLOCATION = 8  # Cilium's ipam.multiPoolPreAllocation default ("default=8")


def pool_of(pod: PodRef | None) -> str:
    """The pool of ``pod``: its own annotation, else its namespace's, else ``default``."""
    if pod is None:
        return DEFAULT_POOL
    for found in (dict(pod.annotations), dict(pod.namespace_annotations)):
        for name in POOL_ANNOTATIONS:
            value = found.get(name, "").strip()
            if value:
                return value
    return DEFAULT_POOL


def needed_addresses(in_use: int, pending: int, pre_allocate: int) -> int:
    """Cilium's formula: ``roundUp(inUse + pending + preAlloc, preAlloc)``; with preAlloc 0 the
    node asks for exactly what it uses and waits for."""
    total = in_use + pending + pre_allocate
    if pre_allocate <= 0:
        return total
    return math.ceil(total / pre_allocate) * pre_allocate


def pre_allocation(settings: Sequence[tuple[str, int]], pool: str) -> int:
    """preAlloc of ``pool`` from ``ipam.multiPoolPreAllocation`` (unlisted pools: the default 8)."""
    return dict(settings).get(pool, DEFAULT_PRE_ALLOCATION)


@dataclass(frozen=True)
class CidrUse:
    cidr: IPNetwork
    used: int
    capacity: int


def releasable(cidrs: Sequence[CidrUse], needed: int) -> tuple[IPNetwork, ...]:
    """CIDRs without pods that the node can give back while the rest still hold ``needed``
    addresses; the last-allocated (highest) go first, so the node keeps its oldest CIDR."""
    keep = sum(c.capacity for c in cidrs)
    found = []
    for use in sorted(cidrs, key=lambda c: c.cidr, reverse=True):
        if use.used == 0 and keep - use.capacity >= needed:
            keep -= use.capacity
            found.append(use.cidr)
    return tuple(sorted(found))


@dataclass(frozen=True)
class PoolDef:
    """A pool resource: its CIDRs and mask size per family."""

    name: str
    cidrs: tuple[IPNetwork, ...]
    mask_sizes: tuple[tuple[int, int], ...]  # (family, mask size)

    def mask_size(self, family: int) -> int | None:
        return dict(self.mask_sizes).get(family)

    def family_cidrs(self, family: int) -> tuple[IPNetwork, ...]:
        return tuple(c for c in self.cidrs if c.version == family)

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(sorted(f for f, _ in self.mask_sizes))


def parse_pool(name: str, spec: Mapping[str, Any] | None) -> PoolDef:
    """A PodnetIPPool's spec as a ``PoolDef``; ``ValueError`` naming the pool and the field."""
    spec = spec or {}
    cidrs: list[IPNetwork] = []
    masks = []
    for family, key in ((4, "ipv4"), (6, "ipv6")):
        section = spec.get(key)
        if not section:
            continue
        try:
            mine = [ipaddress.ip_network(str(c)) for c in section.get("cidrs") or []]
        except ValueError as exc:
            raise ValueError(f"pool {name}: spec.{key}.cidrs: {exc}") from None
        if not mine:
            raise ValueError(f"pool {name}: spec.{key}.cidrs is empty")
        if any(c.version != family for c in mine):
            raise ValueError(f"pool {name}: spec.{key}.cidrs holds a CIDR of the other family")
        mask = int(section.get("maskSize") or 0)
        widest = min(c.prefixlen for c in mine)
        if not widest <= mask <= mine[0].max_prefixlen - 2:
            raise ValueError(
                f"pool {name}: spec.{key}.maskSize {mask} must lie between /{widest} (the widest CIDR) "
                f"and /{mine[0].max_prefixlen - 2}"
            )
        cidrs += mine
        masks.append((family, mask))
    if not cidrs:
        raise ValueError(f"pool {name}: neither spec.ipv4 nor spec.ipv6 gives a CIDR")
    return PoolDef(name, tuple(cidrs), tuple(masks))


def overlapping(pools: Sequence[PoolDef]) -> dict[str, str]:
    """Pools refused because a CIDR overlaps an earlier pool's (``pools`` in creation order): the
    earlier pool keeps working, the later one gets the error."""
    refused: dict[str, str] = {}
    accepted: list[PoolDef] = []
    for pool in pools:
        clash = next(
            (
                (mine, other.name, theirs)
                for other in accepted
                for mine in pool.cidrs
                for theirs in other.cidrs
                if mine.version == theirs.version and mine.overlaps(theirs)  # type: ignore[arg-type]
            ),
            None,
        )
        if clash is None:
            accepted.append(pool)
            continue
        mine, other, theirs = clash
        refused[pool.name] = (
            f"pool {pool.name} is not used: its CIDR {mine} overlaps {theirs} of pool {other}; "
            "give it CIDRs no other pool has"
        )
    return refused
