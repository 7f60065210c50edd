"""The multi-pool operator on the Kubernetes datastore (``podnet operator --ipam multi-pool``):
the pure plan (``multi_plan.plan_multi_pool``) over PodnetIPPools and PodnetNodes.

Design fact: as in cluster-pool, the allocations are the PodnetNodes' own fields
(``spec.ipam.pools.allocated``), written by merge patch with the object's resourceVersion as a
precondition, so an agent changing its request meanwhile (or a second operator) makes the write
fail with 409 and the operator plans again from what is there: a restarted operator reads
everything back and loses nothing. It reports per node and pool in
``status.ipam.pools.<pool>.error`` (what the agent's ADD waits for), per pool in the
PodnetIPPool's ``status.error`` and ``status.nodes``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from podnet.ipam.pools import PoolDef, parse_pool
from podnet.kube.resources import PodnetIPPool, PodnetNode
from podnet.operator.kube_pool import (
    CONFLICT,
    MAX_ROUNDS,
    KubeSnapshot,
    apply_gone,
    patch_node,
    read_snapshot,
    run_kube_operator,
)
from podnet.operator.multi_plan import MultiPoolPlan, node_pools_of, plan_multi_pool
from podnet.operator.plan import DEFAULT_FENCE_SECONDS, plan_gone

log = logging.getLogger(__name__)


def read_pools(client: Client) -> tuple[list[PoolDef], dict[str, str], dict[str, Any]]:
    """The pools in creation order, those that cannot be read (name -> why), and the objects."""
    objs = sorted(
        client.list(PodnetIPPool),
        key=lambda o: (str(o.metadata.creationTimestamp or ""), str(o.metadata.name)),
    )
    pools, invalid = [], {}
    for obj in objs:
        try:
            pools.append(parse_pool(str(obj.metadata.name), obj.spec))
        except ValueError as exc:
            invalid[str(obj.metadata.name)] = str(exc)
    return pools, invalid, {str(o.metadata.name): o for o in objs}


class KubeMultiPoolOperator:
    def __init__(
        self,
        make_client: Callable[[], Client],
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        auto_create: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``auto_create``: pools to create when missing (Cilium's autoCreateCiliumPodIPPools);
        an existing pool of that name is left as it is."""
        self._make_client = make_client
        self.client = make_client()
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._to_create = dict(auto_create or {})

    def _create_pools(self) -> None:
        for name, spec in list(self._to_create.items()):
            obj = PodnetIPPool(metadata=ObjectMeta(name=name), spec=dict(spec))
            try:
                self.client.create(obj)
                log.info("created IP pool %s (autoCreatePodIPPools)", name)
            except ApiError as exc:
                if exc.status.code != CONFLICT:  # 409: it exists, and stays as it is
                    raise
            del self._to_create[name]

    def reconcile_once(self) -> MultiPoolPlan | None:
        self._create_pools()
        plan = None
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = read_snapshot(self.client)
            pools, invalid, pool_objs = read_pools(self.client)
            nodes = {name: node_pools_of(obj.spec) for name, obj in snap.objects.items()}
            plan = plan_multi_pool(pools, invalid, nodes, snap.nodes)
            conflicts = self._allocate(snap, plan)
            held = {n: tuple(c for cs in p.allocated.values() for c in cs) for n, p in nodes.items()}
            gone = plan_gone(
                {n: c for n, c in held.items() if c}, snap.nodes, snap.gone_since, now, self.grace_seconds,
                snap.liveness, self.fence_seconds,
            )  # fmt: skip
            conflicts += apply_gone(self.client, gone, now)
            self._report_nodes(snap, plan)
            self._report_pools(pool_objs, plan)
            if conflicts == 0:
                break
        return plan

    def _allocate(self, snap: KubeSnapshot, plan: MultiPoolPlan) -> int:
        conflicts = 0
        for name, held in sorted(plan.allocated.items()):
            obj = snap.objects[name]
            allocated = [{"pool": p, "cidrs": [str(c) for c in cidrs]} for p, cidrs in sorted(held.items())]
            body = {
                "metadata": {"resourceVersion": obj.metadata.resourceVersion},
                "spec": {"ipam": {"pools": {"allocated": allocated}}},
            }
            if patch_node(self.client, name, body):
                before = node_pools_of(obj.spec).allocated
                for pool, cidrs in held.items():
                    for cidr in set(cidrs) - set(before.get(pool, ())):
                        log.info("allocated CIDR %s of pool %s to node %s", cidr, pool, name)
                    for cidr in set(before.get(pool, ())) - set(cidrs):
                        log.info("node %s gave back CIDR %s of pool %s", name, cidr, pool)
            else:
                conflicts += 1
        return conflicts

    def _report_nodes(self, snap: KubeSnapshot, plan: MultiPoolPlan) -> None:
        """``status.ipam.pools.<pool>.error`` per node: set what is wrong, clear what is not."""
        for name, obj in snap.objects.items():
            reported = {
                str(k): str((v or {}).get("error") or "")
                for k, v in (((obj.status or {}).get("ipam") or {}).get("pools") or {}).items()
            }
            wanted = plan.errors.get(name, {})
            if {k: v for k, v in reported.items() if v} == wanted:
                continue
            body = {k: {"error": wanted.get(k) or None} for k in set(reported) | set(wanted)}
            try:
                self.client.patch(
                    PodnetNode.Status, name, {"status": {"ipam": {"pools": body}}}, patch_type=PatchType.MERGE
                )
            except ApiError as exc:
                log.warning("cannot report to podnetnode %s: %s", name, exc.status.message)
            for pool, error in wanted.items():
                if not reported.get(pool):  # once when it starts, not at every change of the counts
                    log.error("node %s, pool %s: %s", name, pool, error)

    def _report_pools(self, objs: Mapping[str, Any], plan: MultiPoolPlan) -> None:
        for name, obj in objs.items():
            nodes = {n: [str(c) for c in cidrs] for n, cidrs in sorted(plan.pool_nodes.get(name, {}).items())}
            status = {"error": plan.pool_errors.get(name) or None, "nodes": nodes}
            current = obj.status or {}
            if (current.get("error") or None) == status["error"] and (current.get("nodes") or {}) == nodes:
                continue
            try:
                body = {
                    "status": {**status, "nodes": {**{n: None for n in current.get("nodes") or {}}, **nodes}}
                }
                self.client.patch(PodnetIPPool.Status, name, body, patch_type=PatchType.MERGE)
            except ApiError as exc:
                log.warning("cannot report to podnetippool %s: %s", name, exc.status.message)
            if status["error"] and status["error"] != current.get("error"):
                log.error("%s", status["error"])

    def run(self, stop_event: threading.Event, tick: float) -> None:
        run_kube_operator(
            self._make_client,
            self.reconcile_once,
            stop_event,
            tick,
            "multi-pool reconcile (Kubernetes)",
            kinds=(PodnetNode, Node, PodnetIPPool),
        )
        self.client.close()
