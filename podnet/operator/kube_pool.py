"""The cluster-pool operator on the Kubernetes datastore: the same pure plan (``plan.plan_pool``) over
PodnetNodes and Node objects instead of etcd keys.

Design fact: the allocations are the PodnetNodes' ``spec.ipam.podCIDRs`` themselves (no index
beside them), written with the object's resourceVersion as a precondition, so two operators (or an
operator and an agent) never both win a race: the loser gets 409 and plans again. A node is
registered while its Node object exists; a PodnetNode without one is gone since the time in its
``podnet.io/gone-since`` annotation, and after the grace period (and the fence of a node that
last reported endpoints) the operator deletes it, which frees its CIDRs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from podnet.ipam.cidr import PoolSpec
from podnet.kube.convert import OPERATOR_MANAGER, from_time, record_of
from podnet.kube.resources import PodnetNode
from podnet.kube.watch import ResourceWatcher
from podnet.model import IPNetwork
from podnet.operator.loop import reconcile_forever
from podnet.operator.plan import (
    DEFAULT_FENCE_SECONDS,
    GonePlan,
    NodeLiveness,
    PoolPlan,
    cidrs_by_node,
    plan_pools,
)
from podnet.store.nodes import NodeRecord

log = logging.getLogger(__name__)

GONE_ANNOTATION = "podnet.io/gone-since"
CONFLICT, NOT_FOUND = 409, 404
MAX_ROUNDS = 5


@dataclass
class KubeSnapshot:
    nodes: dict[str, NodeRecord] = field(default_factory=dict)  # PodnetNodes whose Node exists
    objects: dict[str, Any] = field(default_factory=dict)  # every PodnetNode by name
    allocations: dict[IPNetwork, str] = field(default_factory=dict)
    gone_since: dict[str, float] = field(default_factory=dict)
    liveness: dict[str, NodeLiveness] = field(default_factory=dict)


def read_snapshot(client: Client) -> KubeSnapshot:
    existing = {str(n.metadata.name) for n in client.list(Node)}
    snap = KubeSnapshot()
    for obj in client.list(PodnetNode):
        name = str(obj.metadata.name)
        snap.objects[name] = obj
        try:
            record = record_of(name, obj.spec, obj.status)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable podnetnode %s: %s", name, exc)
            continue
        for cidr in record.node.pod_cidrs:
            snap.allocations[cidr] = name
        if name in existing:
            snap.nodes[name] = record
        since = (obj.metadata.annotations or {}).get(GONE_ANNOTATION)
        if since:
            snap.gone_since[name] = float(since)
        status = obj.status or {}
        if status.get("lastSeen"):
            snap.liveness[name] = NodeLiveness(
                from_time(status["lastSeen"]), int(status.get("endpoints") or 0)
            )
    return snap


class KubeClusterPoolOperator:
    def __init__(
        self,
        make_client: Callable[[], Client],
        spec: PoolSpec,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        spec6: PoolSpec | None = None,
    ) -> None:
        self._make_client = make_client
        self.client = make_client()
        self.spec = spec
        self.specs = (spec, spec6) if spec6 is not None else (spec,)  # dual stack: a CIDR of each
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._reported: dict[str, str] = {}

    def reconcile_once(self) -> PoolPlan:
        plan = PoolPlan()
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = read_snapshot(self.client)
            plan = plan_pools(
                self.specs, snap.nodes, snap.allocations, snap.gone_since, now, self.grace_seconds,
                snap.liveness, self.fence_seconds,
            )  # fmt: skip
            self._report(snap, plan)
            if plan.empty or self.apply(snap, plan, now) == 0:
                break
        return plan

    def apply(self, snap: KubeSnapshot, plan: PoolPlan, now: float) -> int:
        """Apply ``plan``; returns how many steps lost a race (the caller then plans again)."""
        conflicts = 0
        held = cidrs_by_node(snap.allocations)
        new: dict[str, list[IPNetwork]] = {}
        for name, cidr in plan.assign:  # a dual-stack node gets both families in one patch
            new.setdefault(name, []).append(cidr)
        for name, added in new.items():
            rv = snap.objects[name].metadata.resourceVersion
            every = sorted((*held.get(name, ()), *added), key=lambda c: (c.version, c))
            body = {
                "metadata": {"resourceVersion": rv},
                "spec": {"ipam": {"podCIDRs": [str(c) for c in every]}},
            }
            ok = patch_node(self.client, name, body)
            for cidr in added if ok else ():
                log.info("allocated pod CIDR %s to node %s", cidr, name)
            conflicts += not ok
        gone = GonePlan(plan.mark_gone, plan.clear_gone, plan.reclaim, plan.fenced)
        return conflicts + apply_gone(self.client, gone, now)

    def _report(self, snap: KubeSnapshot, plan: PoolPlan) -> None:
        """A node that gets no CIDR is told why in its status (what its agent waits for)."""
        wanted = {name: f"pool exhausted: {self.spec.describe()} has no free /{self.spec.mask_size}"
                  for name in plan.exhausted}  # fmt: skip
        for name in set(self._reported) | set(wanted):
            error = wanted.get(name, "")
            if self._reported.get(name, "") == error or name not in snap.objects:
                continue
            body = {"status": {"ipam": {"operatorStatus": {"error": error}}}}
            try:
                self.client.patch(PodnetNode.Status, name, body, patch_type=PatchType.MERGE)
                self._reported[name] = error
            except ApiError as exc:
                log.warning("cannot report to podnetnode %s: %s", name, exc.status.message)
            if error:
                log.error("node %s: %s", name, error)

    def run(self, stop_event: threading.Event, tick: float) -> None:
        run_kube_operator(
            self._make_client, self.reconcile_once, stop_event, tick, "cluster-pool reconcile (Kubernetes)"
        )
        self.client.close()


def patch_node(client: Client, name: str, body: dict[str, Any]) -> bool:
    """A merge patch of a PodnetNode (with the object's resourceVersion in ``body`` where it
    matters): False when someone was first (409) or the object is gone."""
    try:
        client.patch(PodnetNode, name, body, patch_type=PatchType.MERGE, field_manager=OPERATOR_MANAGER)
    except ApiError as exc:
        if exc.status.code in (CONFLICT, NOT_FOUND):
            return False
        raise
    return True


def apply_gone(client: Client, gone: GonePlan, now: float) -> int:
    """Mark nodes gone, clear the mark of returned ones, delete the PodnetNodes of nodes gone for
    the grace period (which frees their CIDRs); returns the conflicts."""
    conflicts = 0
    for name in gone.mark_gone:
        if patch_node(client, name, {"metadata": {"annotations": {GONE_ANNOTATION: f"{now:.3f}"}}}):
            log.info("node %s is gone (no Node object); its CIDRs are reclaimed after the grace period", name)
    for name in gone.clear_gone:
        conflicts += not patch_node(client, name, {"metadata": {"annotations": {GONE_ANNOTATION: None}}})
    for name, cidrs in gone.reclaim:
        try:
            client.delete(PodnetNode, name)
            log.info("reclaimed pod CIDRs %s of gone node %s", ", ".join(map(str, cidrs)), name)
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                raise
    return conflicts


def run_kube_operator(
    make_client: Callable[[], Client],
    reconcile_once: Callable[[], object],
    stop_event: threading.Event,
    tick: float,
    what: str,
    kinds: tuple[Any, ...] = (PodnetNode, Node),
) -> None:
    """Reconcile every ``tick`` and whenever an object of ``kinds`` changes, until stopped."""
    wake = threading.Event()
    watchers = [ResourceWatcher(make_client, kind, lambda _e: wake.set()).start() for kind in kinds]
    try:
        reconcile_forever(reconcile_once, wake, stop_event, tick, what, (httpx.HTTPError, OSError))
    finally:
        for watcher in watchers:
            watcher.stop()
