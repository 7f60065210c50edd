"""Pure planning for the cluster-pool operator: which node gets which CIDR, what to reclaim.

Inputs are a snapshot of the store (registered nodes, CIDR -> node allocations, "gone since"
markers, what each node's agent last reported); the output is a frozen ``PoolPlan`` that the
operator applies with compare-and-swap transactions. Requested CIDRs are honoured first (all of
them), then free subnets are handed out in pool order to the remaining nodes sorted by name, so
the result is deterministic.

A gone node's CIDRs are reclaimed only when its registration has been gone for the grace period
*and* its agent has not reported for as long (a node whose agent still reports is not gone, even
if its registration vanished), *and* it reported no endpoints; a node that last reported
endpoints is fenced for ``fence_seconds`` after that report, because its pods may still use the
addresses. Fenced CIDRs are never handed to another node.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podnet.ipam.cidr import PoolSpec, next_free_subnet
from podnet.model import IPNetwork
from podnet.store.nodes import NodeRecord
from podnet.store.operatorstate import NodeLiveness


@dataclass(frozen=True)
class IgnoredRequest:
    node: str
    cidr: IPNetwork
    reason: str


DEFAULT_FENCE_SECONDS = 3600.0


@dataclass(frozen=True)
class PoolPlan:
    assign: tuple[tuple[str, IPNetwork], ...] = ()
    mark_gone: tuple[str, ...] = ()
    clear_gone: tuple[str, ...] = ()
    reclaim: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()
    exhausted: tuple[str, ...] = ()  # nodes that need a CIDR and get none
    ignored_requests: tuple[IgnoredRequest, ...] = ()
    fenced: tuple[tuple[str, str], ...] = ()  # (gone node, why its CIDRs are not reclaimed yet)
    blocked: tuple[tuple[IPNetwork, str], ...] = ()  # node subnets never handed out, and why

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
    liveness: Mapping[str, NodeLiveness] | None = None,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
) -> PoolPlan:
    """The next steps for the cluster pool; see the module docstring for the order of choices."""
    held = cidrs_by_node(allocations)
    family = spec.pools[0].version
    needy = sorted(n for n in nodes if not any(c.version == family for c in held.get(n, ())))
    blocked = underlay_subnets(spec, nodes)
    taken: set[IPNetwork] = set(allocations) | set(blocked)
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

    gone = plan_gone(held, nodes, gone_since, now, grace_seconds, liveness, fence_seconds)
    return PoolPlan(
        assign=tuple(sorted(assign.items())),
        mark_gone=gone.mark_gone,
        clear_gone=gone.clear_gone,
        reclaim=gone.reclaim,
        exhausted=tuple(exhausted),
        ignored_requests=tuple(ignored),
        fenced=gone.fenced,
        blocked=tuple(sorted(blocked.items(), key=lambda item: (item[0].version, item[0]))),
    )


def plan_pools(
    specs: Sequence[PoolSpec],
    nodes: Mapping[str, NodeRecord],
    allocations: Mapping[IPNetwork, str],
    gone_since: Mapping[str, float],
    now: float,
    grace_seconds: float,
    liveness: Mapping[str, NodeLiveness] | None = None,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
) -> PoolPlan:
    """``plan_pool`` for a dual-stack cluster: one pool spec per family (IPv4, IPv6), so each node
    gets one CIDR of each; gone nodes are handled once, whatever their CIDRs' families."""
    plans = [
        plan_pool(spec, nodes, allocations, gone_since, now, grace_seconds, liveness, fence_seconds)
        for spec in specs
    ]
    first = plans[0]
    return PoolPlan(
        assign=tuple(sorted((a for p in plans for a in p.assign), key=lambda a: (a[0], a[1].version))),
        mark_gone=first.mark_gone,
        clear_gone=first.clear_gone,
        reclaim=first.reclaim,
        exhausted=tuple(sorted({n for p in plans for n in p.exhausted})),
        ignored_requests=tuple(r for p in plans for r in p.ignored_requests),
        fenced=first.fenced,
        blocked=tuple(b for p in plans for b in p.blocked),
    )


@dataclass(frozen=True)
class GonePlan:
    mark_gone: tuple[str, ...] = ()
    clear_gone: tuple[str, ...] = ()
    reclaim: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = ()
    fenced: tuple[tuple[str, str], ...] = ()


def plan_gone(
    held: Mapping[str, tuple[IPNetwork, ...]],
    nodes: Mapping[str, NodeRecord],
    gone_since: Mapping[str, float],
    now: float,
    grace_seconds: float,
    liveness: Mapping[str, NodeLiveness] | None = None,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
) -> GonePlan:
    """Nodes that hold CIDRs but are no longer registered: mark them gone, and reclaim their
    CIDRs after the grace period unless fenced (see the module docstring); any IPAM mode."""
    absent = sorted(n for n in held if n not in nodes)
    due = [n for n in absent if n in gone_since and now - gone_since[n] >= grace_seconds]
    fenced = {
        n: why for n in due if (why := _fence(n, (liveness or {}).get(n), now, grace_seconds, fence_seconds))
    }
    return GonePlan(
        mark_gone=tuple(n for n in absent if n not in gone_since),
        clear_gone=tuple(sorted(n for n in gone_since if n in nodes or n not in held)),
        reclaim=tuple((n, held[n]) for n in due if n not in fenced),
        fenced=tuple(sorted(fenced.items())),
    )


def underlay_subnets(spec: PoolSpec, nodes: Mapping[str, NodeRecord]) -> dict[IPNetwork, str]:
    """Node subnets of the pools that hold a node's own (underlay) address: never handed out, so
    pods never shadow a node (the pools should not overlap the underlay at all; status says so)."""
    found: dict[IPNetwork, str] = {}
    for name, record in sorted(nodes.items()):
        for address in (record.node.ipv4, record.node.ipv6):
            for pool in spec.pools:
                if address is not None and address.version == pool.version and address in pool:
                    subnet = ipaddress.ip_network(f"{address}/{spec.mask_size}", strict=False)
                    found[subnet] = f"holds node {name}'s address {address}"
    return found


def _fence(
    name: str, live: NodeLiveness | None, now: float, grace_seconds: float, fence_seconds: float
) -> str | None:
    """Why a gone node's CIDRs must not be reclaimed yet (None: they may be). The text holds
    times, not ages, so it stays the same from one round to the next."""
    if live is None:
        return None
    age = now - live.heartbeat
    if age < grace_seconds:
        return (
            f"its agent reported at {_clock(live.heartbeat)}, less than {grace_seconds:g}s ago, so the "
            "node is not gone; its registration should return"
        )
    if live.endpoints > 0 and age < fence_seconds:
        return (
            f"it had {live.endpoints} pod endpoint(s) when its agent last reported, at "
            f"{_clock(live.heartbeat)}; fenced until {_clock(live.heartbeat + fence_seconds)} (its pods "
            f"may still use the addresses); delete /podnet/v1/nodestate/{name} once the node is known "
            "to be gone, to release them now"
        )
    return None


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _request_problem(
    spec: PoolSpec, cidr: IPNetwork, taken: set[IPNetwork], allocations: Mapping[IPNetwork, str]
) -> str | None:
    if not spec.contains(cidr):
        return f"not a /{spec.mask_size} inside the cluster pool ({spec.describe()})"
    if cidr in taken:
        owner = allocations.get(cidr)
        return f"already allocated to {owner}" if owner else "requested by another node first"
    return None
