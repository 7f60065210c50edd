"""Pure planning for the cluster-pool operator: which node gets which CIDR, what to reclaim.

Inputs are a snapshot of the store (registered nodes, CIDR -> node allocations, "gone since"
markers); the output is a frozen ``PoolPlan`` that the operator applies with compare-and-swap
transactions. Requested CIDRs are honoured first (all of them), then free subnets are handed out
in pool order to the remaining nodes sorted by name, so the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from podnet.ipam.cidr import PoolSpec, next_free_subnet
from podnet.model import IPNetwork
from podnet.store.nodes import NodeRecord


@dataclass(frozen=True)
class IgnoredRequest:
    node: str
    cidr: IPNetwork
    reason: str


@dataclass(frozen=True)
class PoolPlan:
    assign: tuple[tuple[str, IPNetwork], ...] = ()
    mark_gone: tuple[str, ...] = ()
    clear_gone: tuple[str, ...] = ()
    reclaim: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()
    exhausted: tuple[str, ...] = ()  # nodes that need a CIDR and get none
    ignored_requests: tuple[IgnoredRequest, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.assign or self.mark_gone or self.clear_gone or self.reclaim)


def cidrs_by_node(allocations: Mapping[IPNetwork, str]) -> dict[str, tuple[IPNetwork, ...]]:
    by_node: dict[str, list[IPNetwork]] = {}
    for cidr, node in sorted(allocations.items(), key=lambda item: (item[0].version, item[0])):
        by_node.setdefault(node, []).append(cidr)
    return {node: tuple(cidrs) for node, cidrs in by_node.items()}


def plan_pool(
    spec: PoolSpec,
    nodes: Mapping[str, NodeRecord],
    allocations: Mapping[IPNetwork, str],
    gone_since: Mapping[str, float],
    now: float,
    grace_seconds: float,
) -> PoolPlan:
    """The next steps for the cluster pool; see the module docstring for the order of choices."""
    held = cidrs_by_node(allocations)
    family = spec.pools[0].version
    needy = sorted(n for n in nodes if not any(c.version == family for c in held.get(n, ())))
    taken: set[IPNetwork] = set(allocations)
    assign: dict[str, IPNetwork] = {}
    ignored: list[IgnoredRequest] = []

    for name in needy:
        for cidr in nodes[name].requested_pod_cidrs:
            if cidr.version != family:
                continue
            reason = _request_problem(spec, cidr, taken, allocations)
            if reason is None:
                assign[name] = cidr
                taken.add(cidr)
                break
            ignored.append(IgnoredRequest(name, cidr, reason))

    exhausted = []
    for name in needy:
        if name in assign:
            continue
        free = next_free_subnet(spec, taken)
        if free is None:
            exhausted.append(name)
            continue
        assign[name] = free
        taken.add(free)

    absent = sorted(n for n in held if n not in nodes)
    return PoolPlan(
        assign=tuple(sorted(assign.items())),
        mark_gone=tuple(n for n in absent if n not in gone_since),
        clear_gone=tuple(sorted(n for n in gone_since if n in nodes or n not in held)),
        reclaim=tuple(
            (n, held[n]) for n in absent if n in gone_since and now - gone_since[n] >= grace_seconds
        ),
        exhausted=tuple(exhausted),
        ignored_requests=tuple(ignored),
    )


def _request_problem(
    spec: PoolSpec, cidr: IPNetwork, taken: set[IPNetwork], allocations: Mapping[IPNetwork, str]
) -> str | None:
    if not spec.contains(cidr):
        return f"not a /{spec.mask_size} inside the cluster pool ({spec.describe()})"
    if cidr in taken:
        owner = allocations.get(cidr)
        return f"already allocated to {owner}" if owner else "requested by another node first"
    return None
