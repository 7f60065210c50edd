"""The multi-pool operator on etcd (``podnet operator --ipam multi-pool --etcd-endpoints ...``): the
pure plan (``multi_plan.plan_multi_pool``) over the keys of ``store.multipool``.

Design fact: every write is a transaction comparing the revisions the plan was made from (the
node's request and allocation keys), so an agent that changed its request meanwhile, or a second
operator, makes it fail and the operator plans again; a restarted operator reads everything back
and loses nothing. A node whose registration is gone keeps its CIDRs for the grace period (and
the fence of a node that last reported pods), as in cluster-pool; then its keys are deleted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from podnet.ipam.pools import PoolDef, parse_pool
from podnet.model import IPNetwork
from podnet.operator.cluster_pool import Snapshot
from podnet.operator.cluster_pool import read_snapshot as read_nodes
from podnet.operator.loop import reconcile_forever
from podnet.operator.multi_plan import MultiPoolPlan, node_pools_of, plan_multi_pool
from podnet.operator.plan import DEFAULT_FENCE_SECONDS, GonePlan, plan_gone
from podnet.store import keys
from podnet.store import multipool as mp
from podnet.store.client import KV, Store, StoreError, cmp_absent, cmp_mod_revision, op_delete, op_put
from podnet.store.watch import PrefixWatcher

log = logging.getLogger(__name__)

MAX_ROUNDS = 8


@dataclass(frozen=True)
class PoolSnapshot:
    nodes: Snapshot  # registrations, gone markers, node state (shared with cluster-pool)
    pools: dict[str, KV]
    pool_status: dict[str, KV]
    requests: dict[str, KV]
    allocations: dict[str, KV]

    def pool_defs(self) -> tuple[list[PoolDef], dict[str, str]]:
        found, invalid = [], {}
        docs = sorted(
            ((name, mp.decode(kv)) for name, kv in self.pools.items()),
            key=lambda item: (float(item[1].get("created") or 0), item[0]),
        )
        for name, doc in docs:
            try:
                found.append(parse_pool(name, doc.get("spec")))
            except ValueError as exc:
                invalid[name] = str(exc)
        return found, invalid

    def node_fields(self, name: str) -> dict[str, Any]:
        """A node's request and allocation, shaped like a PodnetNode's ``spec``."""
        pools = {
            "requested": mp.decode(self.requests.get(name)).get("requested") or [],
            "allocated": mp.decode(self.allocations.get(name)).get("allocated") or [],
        }
        return {"ipam": {"pools": pools}}


def read_snapshot(store: Store) -> PoolSnapshot:
    nodes = read_nodes(store)

    def by_name(prefix: str) -> dict[str, KV]:
        return {kv.key[len(prefix) :]: kv for kv in store.list_prefix(prefix)[0]}

    return PoolSnapshot(
        nodes, by_name(mp.POOLS), by_name(mp.POOL_STATUS), by_name(mp.REQUESTS), by_name(mp.ALLOCATIONS)
    )


class EtcdMultiPoolOperator:
    def __init__(
        self,
        store: Store,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        auto_create: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._to_create = dict(auto_create or {})

    def _create_pools(self) -> None:
        for name, spec in list(self._to_create.items()):
            if self.store.create(mp.POOLS + name, json.dumps({"spec": dict(spec), "created": self.clock()})):
                log.info("created IP pool %s (autoCreatePodIPPools)", name)
            del self._to_create[name]  # an existing pool of that name stays as it is

    def reconcile_once(self) -> MultiPoolPlan | None:
        self._create_pools()
        plan = None
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = read_snapshot(self.store)
            pools, invalid = snap.pool_defs()
            names = set(snap.requests) | set(snap.allocations)
            fields = {n: node_pools_of(snap.node_fields(n)) for n in names}
            plan = plan_multi_pool(pools, invalid, fields, snap.nodes.nodes)
            conflicts = sum(not self._write_node(snap, plan, name) for name in sorted(names))
            held = {n: tuple(c for cs in f.allocated.values() for c in cs) for n, f in fields.items()}
            gone = plan_gone(
                {n: c for n, c in held.items() if c}, snap.nodes.nodes, snap.nodes.gone_since(), now,
                self.grace_seconds, snap.nodes.liveness(), self.fence_seconds,
            )  # fmt: skip
            conflicts += self._apply_gone(snap, gone, now)
            self._report_pools(snap, plan)
            if conflicts == 0:
                break
        return plan

    def _write_node(self, snap: PoolSnapshot, plan: MultiPoolPlan, name: str) -> bool:
        """The node's allocation and errors, if they changed; False when a race was lost."""
        current = mp.decode(snap.allocations.get(name))
        held = plan.allocated.get(name)
        allocated = (
            [{"pool": p, "cidrs": [str(c) for c in cidrs]} for p, cidrs in sorted(held.items())]
            if held is not None
            else current.get("allocated") or []
        )
        doc = {"allocated": allocated, "errors": plan.errors.get(name, {})}
        if doc == {"allocated": current.get("allocated") or [], "errors": current.get("errors") or {}}:
            return True
        ok = self.store.txn(
            [
                cmp_mod_revision(mp.ALLOCATIONS + name, _rev(snap.allocations.get(name))),
                cmp_mod_revision(mp.REQUESTS + name, _rev(snap.requests.get(name))),
            ],
            [op_put(mp.ALLOCATIONS + name, json.dumps(doc))],
        ).succeeded
        if ok:
            self._log_changes(name, current, doc)
        return ok

    def _log_changes(self, name: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        old = {e["pool"]: set(e.get("cidrs") or []) for e in before.get("allocated") or []}
        for entry in after["allocated"]:
            for cidr in sorted(set(entry["cidrs"]) - old.get(entry["pool"], set())):
                log.info("allocated CIDR %s of pool %s to node %s", cidr, entry["pool"], name)
        for pool, error in after["errors"].items():
            if not (before.get("errors") or {}).get(pool):
                log.error("node %s, pool %s: %s", name, pool, error)

    def _apply_gone(self, snap: PoolSnapshot, gone: GonePlan, now: float) -> int:
        conflicts = 0
        for name in gone.mark_gone:
            if self.store.create(keys.node_gone_key(name), json.dumps({"since": now})):
                log.info("node %s is gone; its pool CIDRs are reclaimed after the grace period", name)
        for name in gone.clear_gone:
            conflicts += not self.store.delete_if(
                keys.node_gone_key(name), snap.nodes.gone[name].mod_revision
            )
        for name, cidrs in gone.reclaim:
            conflicts += not self._reclaim(snap, name, cidrs)
        return conflicts

    def _reclaim(self, snap: PoolSnapshot, name: str, cidrs: tuple[IPNetwork, ...]) -> bool:
        compare = [
            cmp_absent(keys.node_key(name)),
            cmp_mod_revision(keys.node_gone_key(name), _rev(snap.nodes.gone.get(name))),
            cmp_mod_revision(mp.ALLOCATIONS + name, _rev(snap.allocations.get(name))),
            cmp_mod_revision(keys.nodestate_key(name), _rev(snap.nodes.nodestate.get(name))),
        ]
        success = [
            op_delete(mp.ALLOCATIONS + name),
            op_delete(mp.REQUESTS + name),
            op_delete(keys.node_gone_key(name)),
            op_delete(keys.nodestate_key(name)),
        ]
        ok = self.store.txn(compare, success).succeeded
        if ok:
            log.info("reclaimed pool CIDRs %s of gone node %s", ", ".join(map(str, cidrs)), name)
        return ok

    def _report_pools(self, snap: PoolSnapshot, plan: MultiPoolPlan) -> None:
        for name in snap.pools:
            nodes = {n: [str(c) for c in cidrs] for n, cidrs in sorted(plan.pool_nodes.get(name, {}).items())}
            status = {"error": plan.pool_errors.get(name), "nodes": nodes}
            if mp.decode(snap.pool_status.get(name)) != status:
                self.store.put(mp.POOL_STATUS + name, json.dumps(status))
                if status["error"]:
                    log.error("%s", status["error"])

    def run(self, stop_event: threading.Event, tick: float) -> None:
        wake = threading.Event()
        watchers = [
            PrefixWatcher(self.store, prefix, lambda _event: wake.set()).start()
            for prefix in (keys.NODES_PREFIX, mp.POOLS, mp.REQUESTS)
        ]
        try:
            reconcile_forever(
                self.reconcile_once, wake, stop_event, tick, "multi-pool reconcile (etcd)", (StoreError,)
            )
        finally:
            for watcher in watchers:
                watcher.stop()


def _rev(kv: KV | None) -> int:
    return kv.mod_revision if kv else 0
