"""The operators' state on ``datastore: kubernetes`` (``podnet.store.operatorstate.OperatorState``):
PodnetNode, PodnetIPPool and Node objects.

Design fact: the allocations are the PodnetNodes' own fields (``spec.ipam.podCIDRs`` for a
CIDR per node, ``spec.ipam.pools.allocated`` for CIDRs of named pools; no index beside them),
written by merge patch with the object's resourceVersion as a precondition, so a write that someone else beat
gets 409 and the operator plans again. A node is registered while its Node object exists; a
PodnetNode without one is gone since its ``podnet.io/gone-since`` annotation, and reclaiming it
deletes the PodnetNode, which frees its CIDRs. What a node waits for is reported in its status
(``status.ipam.operatorStatus.error``, ``status.ipam.pools.<pool>.error``), a pool's state in the
PodnetIPPool's status.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx2 as httpx
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from podnet.kube.convert import OPERATOR_MANAGER, from_time, record_of
from podnet.kube.lease import LeaderLease
from podnet.kube.resources import PodnetIPPool, PodnetNode
from podnet.kube.watch import ResourceWatcher
from podnet.model import IPNetwork
from podnet.store.operatorstate import NodeLiveness, OperatorSnapshot, PoolObject, Stoppable, Watches

log = logging.getLogger(__name__)

GONE_ANNOTATION = "podnet.io/gone-since"
CONFLICT, NOT_FOUND = 409, 404


class KubeOperatorState:
    kind = "kubernetes"
    outages: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)
    max_tick = 5.0  # a third of the lease's 15 s

    def __init__(self, make_client: Callable[[], Client], identity: str = "") -> None:
        self._make_client = make_client
        self.client = make_client()
        self._reported: dict[str, str] = {}  # node -> the cluster-pool error its status shows
        self.lease = LeaderLease(self.client, identity or f"{socket.gethostname()}_{os.getpid()}")

    def lead(self) -> bool:
        """Only the holder of the operator's Lease reconciles (``podnet.kube.lease``)."""
        return self.lease.held()

    def snapshot(self, pools: bool = False) -> OperatorSnapshot:
        existing = {str(n.metadata.name) for n in self.client.list(Node)}
        objects: dict[str, Any] = {}
        registered, pod_cidrs, gone_since, liveness = {}, {}, {}, {}
        node_pools: dict[str, Mapping[str, Any]] = {}
        errors: dict[str, dict[str, str]] = {}
        for obj in self.client.list(PodnetNode):
            name = str(obj.metadata.name)
            objects[name] = obj
            node_pools[name] = obj.spec or {}
            reported = ((obj.status or {}).get("ipam") or {}).get("pools") or {}
            errors[name] = {str(k): str((v or {}).get("error") or "") for k, v in reported.items()}
            since = (obj.metadata.annotations or {}).get(GONE_ANNOTATION)
            if since:
                gone_since[name] = float(since)
            status = obj.status or {}
            if status.get("lastSeen"):
                seen = from_time(status["lastSeen"])
                liveness[name] = NodeLiveness(seen, int(status.get("endpoints") or 0))
            try:
                record = record_of(name, obj.spec, obj.status)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable podnetnode %s: %s", name, exc)
                continue
            for cidr in record.node.pod_cidrs:
                pod_cidrs[cidr] = name
            if name in existing:
                registered[name] = record
        found = self._pools() if pools else ()
        fields = node_pools if pools else {}
        return OperatorSnapshot(registered, pod_cidrs, gone_since, liveness, fields, errors, found, objects)

    def _pools(self) -> tuple[PoolObject, ...]:
        objs = sorted(
            self.client.list(PodnetIPPool),
            key=lambda o: (str(o.metadata.creationTimestamp or ""), str(o.metadata.name)),
        )
        return tuple(PoolObject(str(o.metadata.name), o.spec or {}, o.status or {}) for o in objs)

    def _patch(self, name: str, body: Mapping[str, Any]) -> bool:
        """A merge patch of a PodnetNode: False when someone was first (409) or it is gone."""
        try:
            self.client.patch(
                PodnetNode, name, dict(body), patch_type=PatchType.MERGE, field_manager=OPERATOR_MANAGER
            )
        except ApiError as exc:
            if exc.status.code in (CONFLICT, NOT_FOUND):
                return False
            raise
        return True

    def _patch_status(self, kind: Any, name: str, body: Mapping[str, Any]) -> None:
        try:
            self.client.patch(kind, name, dict(body), patch_type=PatchType.MERGE)
        except ApiError as exc:
            log.warning("cannot report to %s %s: %s", kind.__name__.lower(), name, exc.status.message)

    @staticmethod
    def _version(snap: OperatorSnapshot, node: str) -> str:
        return str(snap.versions[node].metadata.resourceVersion)

    def assign(self, snap: OperatorSnapshot, node: str, cidrs: Sequence[IPNetwork]) -> bool:
        body = {
            "metadata": {"resourceVersion": self._version(snap, node)},
            "spec": {"ipam": {"podCIDRs": [str(c) for c in cidrs]}},
        }
        return self._patch(node, body)

    def mark_gone(self, snap: OperatorSnapshot, node: str, now: float) -> bool:
        return self._patch(node, {"metadata": {"annotations": {GONE_ANNOTATION: f"{now:.3f}"}}})

    def clear_gone(self, snap: OperatorSnapshot, node: str) -> bool:
        return self._patch(node, {"metadata": {"annotations": {GONE_ANNOTATION: None}}})

    def reclaim(self, snap: OperatorSnapshot, node: str) -> bool:
        try:
            self.client.delete(PodnetNode, node)
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                raise
        return True

    def report_pool(self, status: Mapping[str, Any], waiting: Mapping[str, str]) -> None:
        """Each node that gets no CIDR is told why in its status (what its agent waits for)."""
        for name in set(self._reported) | set(waiting):
            error = waiting.get(name, "")
            if self._reported.get(name, "") == error:
                continue
            body = {"status": {"ipam": {"operatorStatus": {"error": error}}}}
            try:
                self.client.patch(PodnetNode.Status, name, body, patch_type=PatchType.MERGE)
                self._reported[name] = error
            except ApiError as exc:
                if exc.status.code == NOT_FOUND:
                    self._reported.pop(name, None)
                else:
                    log.warning("cannot report to podnetnode %s: %s", name, exc.status.message)

    def create_pool(self, name: str, spec: Mapping[str, Any], now: float) -> bool:
        try:
            self.client.create(PodnetIPPool(metadata=ObjectMeta(name=name), spec=dict(spec)))
        except ApiError as exc:
            if exc.status.code != CONFLICT:  # 409: it exists, and stays as it is
                raise
            return False
        return True

    def set_node_pools(
        self,
        snap: OperatorSnapshot,
        node: str,
        allocated: Sequence[Mapping[str, Any]] | None,
        errors: Mapping[str, str],
    ) -> bool:
        if allocated is not None:
            body = {
                "metadata": {"resourceVersion": self._version(snap, node)},
                "spec": {"ipam": {"pools": {"allocated": list(allocated)}}},
            }
            if not self._patch(node, body):
                return False
        reported = snap.node_pool_errors.get(node, {})
        if {k: v for k, v in reported.items() if v} != dict(errors):
            change = {k: {"error": errors.get(k) or None} for k in set(reported) | set(errors)}
            self._patch_status(PodnetNode.Status, node, {"status": {"ipam": {"pools": change}}})
        return True

    def set_pool_status(self, pool: PoolObject, status: Mapping[str, Any]) -> None:
        gone = {n: None for n in pool.status.get("nodes") or {}}
        body = {"status": {**status, "nodes": {**gone, **(status.get("nodes") or {})}}}
        self._patch_status(PodnetIPPool.Status, pool.name, body)

    def watch(self, on_change: Callable[[], None], pools: bool) -> Stoppable:
        kinds: tuple[Any, ...] = (PodnetNode, Node, PodnetIPPool) if pools else (PodnetNode, Node)
        return Watches(
            [ResourceWatcher(self._make_client, kind, lambda _e: on_change()).start() for kind in kinds]
        )

    def close(self) -> None:
        self.lease.release()
        self.client.close()
