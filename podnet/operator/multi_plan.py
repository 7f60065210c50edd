"""Pure planning for the multi-pool operator: which node gets which CIDR of which pool.

Inputs: the pools in creation order, and per node what its agent asked for
(``spec.ipam.pools.requested``: addresses needed per pool and family, CIDRs it gives back) and
what it holds (``spec.ipam.pools.allocated``). Output: each node's new ``allocated`` and why a
node's request could not be met. Rules: a pool whose CIDR overlaps an older pool's is refused
(the older keeps working); CIDRs a node gives back are freed; a node gets new CIDRs of the pool's
mask size, lowest first, until their capacity covers what it needs; a CIDR is never given to two
nodes, nor one that overlaps a CIDR some node holds (a pool's mask size may change). Nodes of the
cluster that are gone keep their CIDRs until the gone-node rules reclaim them (``plan.plan_gone``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podnet.ipam.cidr import free_subnet
from podnet.ipam.host import pod_capacity
from podnet.ipam.multi_pool_model import PoolDef, overlapping
from podnet.model import IPNetwork

log = logging.getLogger(__name__)

ADDRS = {"ipv4-addrs": 4, "ipv6-addrs": 6}


@dataclass(frozen=True)
class NodePools:
    """One PodnetNode's multi-pool fields."""

    needed: Mapping[str, Mapping[int, int]] = field(default_factory=dict)  # pool -> family -> addresses
    release: Mapping[str, frozenset[IPNetwork]] = field(default_factory=dict)
    allocated: Mapping[str, tuple[IPNetwork, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MultiPoolPlan:
    allocated: dict[str, dict[str, tuple[IPNetwork, ...]]]  # node -> pool -> CIDRs, changed nodes only
    errors: dict[str, dict[str, str]]  # node -> pool -> why its request is not met
    pool_errors: dict[str, str]  # pool -> why it is not used
    pool_nodes: dict[str, dict[str, tuple[IPNetwork, ...]]]  # pool -> node -> CIDRs, after the plan


def node_pools_of(spec: Mapping[str, Any] | None) -> NodePools:
    """A PodnetNode's ``spec.ipam.pools`` (unreadable entries are skipped with a warning)."""
    pools = ((spec or {}).get("ipam") or {}).get("pools") or {}
    needed: dict[str, dict[int, int]] = {}
    release: dict[str, frozenset[IPNetwork]] = {}
    allocated: dict[str, tuple[IPNetwork, ...]] = {}
    try:
        for entry in pools.get("requested") or []:
            name = str(entry["pool"])
            needed[name] = {ADDRS[k]: int(v) for k, v in (entry.get("needed") or {}).items() if k in ADDRS}
            release[name] = frozenset(ipaddress.ip_network(c) for c in entry.get("release") or [])
        for entry in pools.get("allocated") or []:
            allocated[str(entry["pool"])] = tuple(ipaddress.ip_network(c) for c in entry.get("cidrs") or [])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring unreadable spec.ipam.pools entry: %s", exc)
    return NodePools(needed, release, allocated)


def plan_multi_pool(
    pools: Sequence[PoolDef],
    invalid: Mapping[str, str],
    nodes: Mapping[str, NodePools],
    active: Iterable[str],
) -> MultiPoolPlan:
    """``pools`` in creation order, ``invalid`` pools that could not be read (name -> why),
    ``nodes`` every PodnetNode, ``active`` those whose Node exists (only they get new CIDRs)."""
    refused = {**overlapping(pools), **invalid}
    usable = {p.name: p for p in pools if p.name not in refused}
    live = set(active)
    after: dict[str, dict[str, list[IPNetwork]]] = {}
    for name, node in nodes.items():
        after[name] = {
            pool: [c for c in cidrs if c not in node.release.get(pool, frozenset())]
            for pool, cidrs in node.allocated.items()
        }
    taken = [c for held in after.values() for cidrs in held.values() for c in cidrs]
    errors: dict[str, dict[str, str]] = {}
    for name in sorted(n for n in nodes if n in live):
        for pool, needs in sorted(nodes[name].needed.items()):
            problem = _grow(name, pool, needs, usable.get(pool), refused.get(pool), after[name], taken)
            if problem:
                errors.setdefault(name, {})[pool] = problem
    final = {name: {pool: tuple(c) for pool, c in held.items() if c} for name, held in after.items()}
    changed = {
        name: held
        for name, held in final.items()
        if held != {p: tuple(c) for p, c in nodes[name].allocated.items() if c}
    }
    pool_nodes: dict[str, dict[str, tuple[IPNetwork, ...]]] = {}
    for name, held in after.items():
        for pool, cidrs in held.items():
            if cidrs:
                pool_nodes.setdefault(pool, {})[name] = tuple(cidrs)
    return MultiPoolPlan(changed, errors, refused, pool_nodes)


def _grow(
    node: str,
    pool: str,
    needs: Mapping[int, int],
    pool_def: PoolDef | None,
    refused: str | None,
    held: dict[str, list[IPNetwork]],
    taken: list[IPNetwork],
) -> str:
    """Give ``node`` CIDRs of ``pool`` until it holds what it needs; returns what fell short."""
    if pool_def is None:
        return refused or f"there is no PodnetIPPool {pool!r}: create it, or remove the pods' annotation"
    problems = []
    for family, needed in sorted(needs.items()):
        mask = pool_def.mask_size(family)
        if mask is None:
            if needed:
                problems.append(f"pool {pool} has no IPv{family} CIDRs")
            continue
        mine = held.setdefault(pool, [])
        have = sum(pod_capacity(c) for c in mine if c.version == family)
        while have < needed:
            subnet = free_subnet(pool_def.family_cidrs(family), mask, taken)
            if subnet is None:
                cidrs = ", ".join(str(c) for c in pool_def.family_cidrs(family))
                problems.append(
                    f"pool {pool} is exhausted: no free /{mask} left in {cidrs} (node {node} needs {needed} "
                    f"IPv{family} addresses and holds {have}); add CIDRs to the pool"
                )
                break
            mine.append(subnet)
            taken.append(subnet)
            have += pod_capacity(subnet)
    return "; ".join(problems)
