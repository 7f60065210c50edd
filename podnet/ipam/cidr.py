"""Pure CIDR maths for cluster-pool IPAM: parse and validate pools, carve per-node subnets.

A pool list such as ``10.244.0.0/16`` with mask size 24 yields 256 node subnets, handed out in
address order across the pools in the order given. Nothing here touches the store or the kernel;
IPv4 and IPv6 go through the same code (``ipaddress`` networks of either family).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from podnet.model import IPNetwork


class CIDRError(ValueError):
    """A pool or subnet definition that cannot be used; the message names the CIDR and the reason."""


@dataclass(frozen=True)
class PoolSpec:
    """Validated cluster pools plus the per-node mask size (``clusterPoolIPv4MaskSize``)."""

    pools: tuple[IPNetwork, ...]
    mask_size: int

    def subnets(self) -> Iterator[IPNetwork]:
        """Every node subnet of every pool, in pool order then address order."""
        for pool in self.pools:
            yield from pool.subnets(new_prefix=self.mask_size)

    def capacity(self) -> int:
        """How many node subnets the pools hold in total."""
        return sum(1 << (self.mask_size - p.prefixlen) for p in self.pools)

    def contains(self, subnet: IPNetwork) -> bool:
        """True if ``subnet`` is a node subnet of these pools (inside one and of the mask size)."""
        return subnet.prefixlen == self.mask_size and any(
            subnet.version == p.version and subnet.subnet_of(p)  # type: ignore[arg-type]
            for p in self.pools
        )

    def describe(self) -> str:
        return f"{', '.join(str(p) for p in self.pools)} split into /{self.mask_size}"


def parse_cidr(text: str, what: str = "CIDR") -> IPNetwork:
    """Parse a network in strict form (no host bits), naming the bad string in the error."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise CIDRError(
            f"invalid {what} {text!r}: {exc}; write it as network/prefix, e.g. 10.244.0.0/16"
        ) from exc


def parse_pool_spec(pool_texts: Sequence[str], mask_size: int, family: int = 4) -> PoolSpec:
    """Validate ``clusterPoolIPv4PodCIDRList`` and ``clusterPoolIPv4MaskSize`` into a ``PoolSpec``.

    Refuses: an empty list, bad CIDR strings, pools of the wrong family, a mask size not longer
    than a pool's prefix (or beyond the address width), and overlapping pools (naming both).
    """
    if not pool_texts:
        raise CIDRError("the cluster pool list is empty: give at least one CIDR, e.g. 10.244.0.0/16")
    pools = tuple(parse_cidr(t, "cluster pool CIDR") for t in pool_texts)
    for pool in pools:
        if pool.version != family:
            raise CIDRError(f"cluster pool {pool} is IPv{pool.version}, expected IPv{family} here")
        if not pool.prefixlen < mask_size <= pool.max_prefixlen:
            raise CIDRError(
                f"mask size /{mask_size} does not fit cluster pool {pool}: it must be longer than "
                f"/{pool.prefixlen} and at most /{pool.max_prefixlen}"
            )
    check_no_overlap(pools)
    return PoolSpec(pools=pools, mask_size=mask_size)


def check_no_overlap(pools: Sequence[IPNetwork]) -> None:
    """Raise ``CIDRError`` naming the first two pools that overlap."""
    for i, a in enumerate(pools):
        for b in pools[i + 1 :]:
            if a.version == b.version and a.overlaps(b):  # type: ignore[arg-type]
                raise CIDRError(f"cluster pools {a} and {b} overlap: remove one or make them disjoint")


def next_free_subnet(spec: PoolSpec, taken: Iterable[IPNetwork]) -> IPNetwork | None:
    """The first node subnet (pool order, address order) not in ``taken``; None when exhausted."""
    return free_subnet(spec.pools, spec.mask_size, list(taken))


def free_subnet(cidrs: Sequence[IPNetwork], mask: int, taken: Iterable[IPNetwork]) -> IPNetwork | None:
    """The lowest /mask of ``cidrs`` that overlaps nothing in ``taken``. Jumps past each taken
    CIDR instead of walking every subnet: a /8 pool split into /30s with hundreds of nodes is
    answered in microseconds, an exhausted one too."""
    for cidr in cidrs:
        if mask < cidr.prefixlen:
            continue
        held = sorted(
            (t for t in taken if t.version == cidr.version and t.overlaps(cidr)),  # type: ignore[arg-type]
            key=lambda t: t.network_address,
        )
        step = 1 << (cidr.max_prefixlen - mask)
        start, end = int(cidr.network_address), int(cidr.broadcast_address)
        for t in held:
            if int(t.network_address) >= start + step:  # a whole /mask fits before this one
                break
            start = max(start, _round_up(int(t.broadcast_address) + 1, step))
        if start + step - 1 <= end:
            return (
                ipaddress.ip_network((start, mask))
                if cidr.version == 4
                else ipaddress.IPv6Network((start, mask))
            )
    return None


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
