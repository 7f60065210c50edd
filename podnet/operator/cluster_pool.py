"""The cluster-pool operator: give every registered node a pod CIDR, reclaim those of gone nodes.

Level-triggered: a node watch (and a periodic tick, for the grace period) wakes ``reconcile_once``,
which reads the store, asks the pure planner, and applies each step as one etcd transaction that
compares what it read. ``/podnet/v1/ipam/cluster-pool/<cidr>`` is CAS-created, so two operators
(or two reconciles racing) can never give one CIDR twice; the node's ``podcidrs`` index is
compared too, so a node never ends up with two CIDRs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from podnet.ipam.cidr import PoolSpec, parse_pool_spec
from podnet.model import IPNetwork
from podnet.operator.loop import reconcile_forever
from podnet.operator.plan import DEFAULT_FENCE_SECONDS, NodeLiveness, PoolPlan, cidrs_by_node, plan_pools
from podnet.store import keys
from podnet.store.client import (
    KV,
    Store,
    StoreError,
    cmp_absent,
    cmp_mod_revision,
    op_delete,
    op_put,
)
from podnet.store.nodes import NodeRecord, encode_pod_cidrs
from podnet.store.watch import PrefixWatcher

log = logging.getLogger(__name__)

MAX_ROUNDS = 8  # re-plan at most this often per wake-up when transactions lose races
STATUS_HEARTBEAT = 10.0  # the status is rewritten at least this often, so readers can tell its age


@dataclass(frozen=True)
class Snapshot:
    nodes: dict[str, NodeRecord]
    allocations: dict[IPNetwork, KV]  # cidr -> allocation key (value: node name)
    podcidrs: dict[str, KV]
    gone: dict[str, KV]
    nodestate: dict[str, KV] = dataclasses.field(default_factory=dict)

    def owners(self) -> dict[IPNetwork, str]:
        return {cidr: kv.text() for cidr, kv in self.allocations.items()}

    def gone_since(self) -> dict[str, float]:
        return {name: float(json.loads(kv.value).get("since", 0)) for name, kv in self.gone.items()}

    def liveness(self) -> dict[str, NodeLiveness]:
        found = {}
        for name, kv in self.nodestate.items():
            try:
                data = json.loads(kv.value)
                found[name] = NodeLiveness(float(data["heartbeat"]), int(data.get("endpoints", 0)))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable node state %s", kv.key)
        return found


def read_snapshot(store: Store) -> Snapshot:
    """Nodes, allocations, CIDR index and gone markers, all read at one store revision."""
    node_kvs, revision = store.list_prefix(keys.NODES_PREFIX)

    def by_name(prefix: str, kvs: list[KV] | None = None) -> dict[str, KV]:
        if kvs is None:
            kvs, _ = store.list_prefix(prefix, revision)
        return {keys.name_from_key(prefix, kv.key): kv for kv in kvs}

    nodes = {}
    for name, kv in by_name(keys.NODES_PREFIX, node_kvs).items():
        try:
            nodes[name] = NodeRecord.from_value(kv.value)
        except (ValueError, KeyError) as exc:
            log.warning("ignoring unreadable node registration %s: %s", kv.key, exc)
    allocations = {}
    for kv in store.list_prefix(keys.CLUSTER_POOL_PREFIX, revision)[0]:
        try:
            allocations[keys.cidr_from_pool_key(kv.key)] = kv
        except ValueError:
            log.warning("ignoring allocation key with a bad CIDR: %s", kv.key)
    return Snapshot(
        nodes,
        allocations,
        by_name(keys.PODCIDRS_PREFIX),
        by_name(keys.NODE_GONE_PREFIX),
        by_name(keys.NODESTATE_PREFIX),
    )


def apply_plan(store: Store, snap: Snapshot, plan: PoolPlan, now: float) -> int:
    """Apply ``plan``; returns how many steps lost a race (the caller then re-plans)."""
    conflicts = 0
    held = cidrs_by_node(snap.owners())
    new: dict[str, list[IPNetwork]] = {}
    for name, cidr in plan.assign:  # a dual-stack node gets both families in one transaction
        new.setdefault(name, []).append(cidr)
    for name, cidrs in new.items():
        index = snap.podcidrs.get(name)
        every = tuple(sorted((*held.get(name, ()), *cidrs), key=lambda c: (c.version, c)))
        ok = store.txn(
            [
                *(cmp_absent(keys.cluster_pool_key(c)) for c in cidrs),
                cmp_mod_revision(keys.podcidrs_key(name), _rev(index)),
            ],
            [
                *(op_put(keys.cluster_pool_key(c), name) for c in cidrs),
                op_put(keys.podcidrs_key(name), encode_pod_cidrs(every)),
            ],
        ).succeeded
        for cidr in cidrs if ok else ():
            log.info("allocated pod CIDR %s to node %s", cidr, name)
        conflicts += not ok
    for name in plan.mark_gone:
        if store.create(keys.node_gone_key(name), json.dumps({"since": now})):
            log.info("node %s is gone; its pod CIDRs are reclaimed after the grace period", name)
    for name in plan.clear_gone:
        conflicts += not store.delete_if(keys.node_gone_key(name), snap.gone[name].mod_revision)
    for name, cidrs in plan.reclaim:
        conflicts += not _reclaim(store, snap, name, cidrs)
    return conflicts


def _rev(kv: KV | None) -> int:
    return kv.mod_revision if kv else 0


def _reclaim(store: Store, snap: Snapshot, name: str, cidrs: tuple[IPNetwork, ...]) -> bool:
    compare = [
        cmp_absent(keys.node_key(name)),
        cmp_mod_revision(keys.node_gone_key(name), _rev(snap.gone[name])),
    ]
    compare += [cmp_mod_revision(keys.cluster_pool_key(c), snap.allocations[c].mod_revision) for c in cidrs]
    # a report from the node's agent since the snapshot cancels the reclaim
    compare.append(cmp_mod_revision(keys.nodestate_key(name), _rev(snap.nodestate.get(name))))
    success = [op_delete(keys.cluster_pool_key(c)) for c in cidrs]
    success += [
        op_delete(keys.podcidrs_key(name)),
        op_delete(keys.node_gone_key(name)),
        op_delete(keys.nodestate_key(name)),
    ]
    ok = store.txn(compare, success).succeeded
    if ok:
        log.info("reclaimed pod CIDRs %s of gone node %s", ", ".join(map(str, cidrs)), name)
    return ok


def pool_status(spec: PoolSpec, snap: Snapshot, plan: PoolPlan) -> dict[str, Any]:
    """What ``podnet status`` shows about the cluster pool (written to OPERATOR_STATUS_KEY)."""
    family = spec.pools[0].version
    allocated = sum(c.version == family for c in snap.allocations) + sum(
        c.version == family for _, c in plan.assign
    )
    status: dict[str, Any] = {
        "state": "ok",
        "message": f"{allocated} of {spec.capacity()} node subnets allocated ({spec.describe()})",
        "pools": [str(p) for p in spec.pools],
        "maskSize": spec.mask_size,
        "capacity": spec.capacity(),
        "allocated": allocated,
        "waitingNodes": list(plan.exhausted),
        "fenced": [{"node": n, "reason": why} for n, why in plan.fenced],
        "blocked": [{"cidr": str(c), "reason": why} for c, why in plan.blocked],
    }
    if plan.blocked:
        status["state"] = "warning"
        status["message"] += (
            f"; the pool overlaps the underlay: {', '.join(f'{c} {why}' for c, why in plan.blocked)}, "
            "never allocated; move the pool outside the node networks"
        )
    if plan.exhausted and allocated >= spec.capacity():  # this family's pool is the one that is full
        status["state"] = "exhausted"
        status["message"] = (
            f"cluster pool exhausted: all {spec.capacity()} node subnets of {spec.describe()} are "
            f"allocated; nodes without a pod CIDR: {', '.join(plan.exhausted)}; add a CIDR to "
            f"clusterPoolIPv{family}PodCIDRList (--cluster-pool-ipv{family}-cidr) or remove nodes that "
            "are gone"
        )
    return status


class ClusterPoolOperator:
    """One operator instance; ``reconcile_once()`` is the whole algorithm, ``run()`` the loop."""

    def __init__(
        self,
        store: Store,
        spec: PoolSpec,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        spec6: PoolSpec | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.specs = (spec, spec6) if spec6 is not None else (spec,)  # dual-stack: a CIDR of each
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._last_status: dict[str, Any] | None = None
        self._last_written = 0.0
        self._warned: set[tuple[str, str]] = set()

    def reconcile_once(self) -> PoolPlan:
        plan = PoolPlan()
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = read_snapshot(self.store)
            plan = plan_pools(
                self.specs, snap.nodes, snap.owners(), snap.gone_since(), now, self.grace_seconds,
                snap.liveness(), self.fence_seconds,
            )  # fmt: skip
            self._report(snap, plan)
            if plan.empty or apply_plan(self.store, snap, plan, now) == 0:
                break
        return plan

    def _report(self, snap: Snapshot, plan: PoolPlan) -> None:
        for req in plan.ignored_requests:
            if (req.node, str(req.cidr)) not in self._warned:
                self._warned.add((req.node, str(req.cidr)))
                log.warning(
                    "node %s requested pod CIDR %s: %s; allocating another", req.node, req.cidr, req.reason
                )
        status = pool_status(self.spec, snap, plan)
        if len(self.specs) > 1:
            status["ipv6"] = pool_status(self.specs[1], snap, plan)
        now = self.clock()
        if status == self._last_status and now - self._last_written < STATUS_HEARTBEAT:
            return
        if plan.exhausted:
            log.error("%s", status["message"])
        for name, why in plan.fenced:
            if ("fenced", name) not in self._warned:  # once per fence, not every round
                self._warned.add(("fenced", name))
                log.warning("node %s is gone but its pod CIDRs stay fenced: %s", name, why)
        self._warned -= {("fenced", n) for kind, n in set(self._warned) if kind == "fenced"} - {
            ("fenced", n) for n, _ in plan.fenced
        }
        self.store.put(
            keys.OPERATOR_STATUS_KEY,
            json.dumps({**status, "updated": now, "heartbeat": STATUS_HEARTBEAT}),
        )
        self._last_status, self._last_written = status, now

    def run(self, stop_event: threading.Event, tick: float) -> None:
        wake = threading.Event()
        watcher = PrefixWatcher(self.store, keys.NODES_PREFIX, lambda _event: wake.set()).start()
        try:
            reconcile_forever(
                self.reconcile_once, wake, stop_event, tick, "cluster-pool reconcile (etcd)", (StoreError,)
            )
        finally:
            watcher.stop()


def run_operator(
    store: Store,
    pools: Sequence[str] | PoolSpec,
    mask_size: int,
    grace_seconds: float,
    stop_event: threading.Event,
    clock: Callable[[], float] = time.time,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
    spec6: PoolSpec | None = None,
) -> None:
    """Run the cluster-pool operator until ``stop_event`` is set (blocking); with ``spec6`` every
    node gets an IPv6 pod CIDR as well (dual stack)."""
    spec = pools if isinstance(pools, PoolSpec) else parse_pool_spec(pools, mask_size)
    tick = min(max(grace_seconds / 4.0, 0.2), 10.0)
    ClusterPoolOperator(store, spec, grace_seconds, clock, fence_seconds, spec6).run(stop_event, tick)
