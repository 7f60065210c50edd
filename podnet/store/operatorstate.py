"""What the IPAM operators read and write, whichever the datastore: ``OperatorState``.

The operators of the modes that hand out CIDRs (``podnet.operator``: one CIDR per node and
family, or CIDRs per named pool) plan from an ``OperatorSnapshot`` and write through this
protocol; ``EtcdOperatorState`` keeps it in podnet's keys (docs/store.md),
``podnet.kube.operatorstate.KubeOperatorState`` in PodnetNode, PodnetIPPool and Node objects.

Design fact: every write that hands out or takes back a CIDR is conditional on what the snapshot
read (etcd revisions, Kubernetes resourceVersions), so two operators, or an operator and an agent,
never both win: the loser's write returns False and the operator plans again from a new snapshot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podnet.model import IPNetwork
from podnet.store import keys
from podnet.store import multipool as mp
from podnet.store.client import KV, Store, StoreError, cmp_absent, cmp_mod_revision, op_delete, op_put
from podnet.store.nodes import NodeRecord, encode_pod_cidrs
from podnet.store.watch import PrefixWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeLiveness:
    """What a node's agent last reported (its heartbeat and how many pods it serves)."""

    heartbeat: float  # unix seconds
    endpoints: int


@dataclass(frozen=True)
class PoolObject:
    """A named IP pool: its spec (``{"ipv4": {"cidrs", "maskSize"}}``) and reported status."""

    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]  # {"error": str | None, "nodes": {node: [cidr, ...]}}


@dataclass(frozen=True)
class OperatorSnapshot:
    """The cluster as one reconcile round sees it."""

    registered: dict[str, NodeRecord]  # nodes that are part of the cluster now
    pod_cidrs: dict[IPNetwork, str]  # cluster-pool: CIDR -> the node that holds it (gone ones too)
    gone_since: dict[str, float]  # nodes marked gone, and since when
    liveness: dict[str, NodeLiveness]
    node_pools: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # pools: shaped as
    # a PodnetNode's spec, {"ipam": {"pools": {"requested": [...], "allocated": [...]}}}
    node_pool_errors: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> pool -> error
    pools: tuple[PoolObject, ...] = ()  # the named pools in creation order
    versions: Any = None  # the datastore's own: what its conditional writes compare


class Stoppable(Protocol):
    def stop(self, timeout: float = 5.0) -> None: ...


class OperatorState(Protocol):
    kind: str  # "etcd" | "kubernetes"
    outages: tuple[type[BaseException], ...]  # what the loop treats as "the datastore is away"
    max_tick: float  # the loop wakes at least this often (a leader renews its lease)

    def lead(self) -> bool:
        """Whether this operator may reconcile now (False: another one does; it stands by)."""
        ...

    def snapshot(self, pools: bool = False) -> OperatorSnapshot:
        """The nodes, their CIDRs and reports; with ``pools`` the IP pools and the nodes' pool
        allocations too (a mode that hands out CIDRs per pool)."""
        ...

    def assign(self, snap: OperatorSnapshot, node: str, cidrs: Sequence[IPNetwork]) -> bool:
        """A mode that gives each node its own CIDRs (cluster-pool's kind): ``cidrs`` are now the
        node's whole list (the new ones free in ``snap``)."""
        ...

    def mark_gone(self, snap: OperatorSnapshot, node: str, now: float) -> bool: ...

    def clear_gone(self, snap: OperatorSnapshot, node: str) -> bool: ...

    def reclaim(self, snap: OperatorSnapshot, node: str) -> bool:
        """Free everything the gone ``node`` holds, unless it came back or reported since."""
        ...

    def report_pool(self, status: Mapping[str, Any], waiting: Mapping[str, str]) -> None:
        """A mode that gives each node its own CIDRs: its pool's status (etcd: the one document
        ``OPERATOR_STATUS_KEY``, read when a node waits), and why each waiting node gets no CIDR."""
        ...

    def create_pool(self, name: str, spec: Mapping[str, Any], now: float) -> bool:
        """Named pools: True when made; an existing pool of that name stays as it is."""
        ...

    def set_node_pools(
        self,
        snap: OperatorSnapshot,
        node: str,
        allocated: Sequence[Mapping[str, Any]] | None,
        errors: Mapping[str, str],
    ) -> bool:
        """Named pools: the node's new allocation (None: unchanged) and why requests are not met."""
        ...

    def set_pool_status(self, pool: PoolObject, status: Mapping[str, Any]) -> None: ...

    def watch(self, on_change: Callable[[], None], pools: bool) -> Stoppable: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Revisions:
    nodes: dict[str, KV]
    allocations: dict[IPNetwork, KV]  # cluster-pool allocation keys
    podcidrs: dict[str, KV]
    gone: dict[str, KV]
    nodestate: dict[str, KV]
    requests: dict[str, KV] = field(default_factory=dict)
    pool_allocations: dict[str, KV] = field(default_factory=dict)


def _rev(kv: KV | None) -> int:
    return kv.mod_revision if kv else 0


class Watches:
    """Several watches stopped as one."""

    def __init__(self, watchers: Sequence[Stoppable]) -> None:
        self._watchers = list(watchers)

    def stop(self, timeout: float = 5.0) -> None:
        for watcher in self._watchers:
            watcher.stop(timeout)


class EtcdOperatorState:
    """The operators' state in etcd: node registrations (on the agents' leases), the cluster-pool
    allocation keys and podcidrs index, gone markers, agent reports and the named pools' keys of
    ``podnet.store.multipool``."""

    kind = "etcd"
    outages: tuple[type[BaseException], ...] = (StoreError,)
    max_tick = float("inf")

    def __init__(self, store: Store) -> None:
        self.store = store

    def lead(self) -> bool:
        """Always: every write is a transaction, so operators side by side never give a CIDR twice."""
        return True

    def snapshot(self, pools: bool = False) -> OperatorSnapshot:
        node_kvs, revision = self.store.list_prefix(keys.NODES_PREFIX)

        def by_name(prefix: str, kvs: list[KV] | None = None) -> dict[str, KV]:
            if kvs is None:
                kvs, _ = self.store.list_prefix(prefix, revision)
            return {keys.name_from_key(prefix, kv.key): kv for kv in kvs}

        nodes = by_name(keys.NODES_PREFIX, node_kvs)
        registered = {}
        for name, kv in nodes.items():
            try:
                registered[name] = NodeRecord.from_value(kv.value)
            except (ValueError, KeyError) as exc:
                log.warning("ignoring unreadable node registration %s: %s", kv.key, exc)
        allocations = {}
        for kv in self.store.list_prefix(keys.CLUSTER_POOL_PREFIX, revision)[0]:
            try:
                allocations[keys.cidr_from_pool_key(kv.key)] = kv
            except ValueError:
                log.warning("ignoring allocation key with a bad CIDR: %s", kv.key)
        revs = _Revisions(
            nodes,
            allocations,
            by_name(keys.PODCIDRS_PREFIX),
            by_name(keys.NODE_GONE_PREFIX),
            by_name(keys.NODESTATE_PREFIX),
        )
        snap = OperatorSnapshot(
            registered,
            {cidr: kv.text() for cidr, kv in allocations.items()},
            {name: _since(kv) for name, kv in revs.gone.items()},
            _liveness(revs.nodestate),
            versions=revs,
        )
        return self._with_pools(snap, revision) if pools else snap

    def _with_pools(self, snap: OperatorSnapshot, revision: int) -> OperatorSnapshot:
        def by_name(prefix: str) -> dict[str, KV]:
            return {kv.key[len(prefix) :]: kv for kv in self.store.list_prefix(prefix, revision)[0]}

        requests, allocations = by_name(mp.REQUESTS), by_name(mp.ALLOCATIONS)
        status = by_name(mp.POOL_STATUS)
        docs = sorted(
            ((name, mp.decode(kv)) for name, kv in by_name(mp.POOLS).items()),
            key=lambda item: (float(item[1].get("created") or 0), item[0]),
        )
        pools = tuple(PoolObject(n, d.get("spec") or {}, mp.decode(status.get(n))) for n, d in docs)
        fields = {}
        for name in set(requests) | set(allocations):
            spec = {
                "requested": mp.decode(requests.get(name)).get("requested") or [],
                "allocated": mp.decode(allocations.get(name)).get("allocated") or [],
            }
            fields[name] = {"ipam": {"pools": spec}}
        errors = {n: dict(mp.decode(kv).get("errors") or {}) for n, kv in allocations.items()}
        revs = snap.versions
        assert isinstance(revs, _Revisions)
        return OperatorSnapshot(
            snap.registered, snap.pod_cidrs, snap.gone_since, snap.liveness, fields, errors, pools,
            _Revisions(revs.nodes, revs.allocations, revs.podcidrs, revs.gone, revs.nodestate,
                       requests, allocations),
        )  # fmt: skip

    @staticmethod
    def _revs(snap: OperatorSnapshot) -> _Revisions:
        assert isinstance(snap.versions, _Revisions), "a snapshot of another datastore"
        return snap.versions

    def assign(self, snap: OperatorSnapshot, node: str, cidrs: Sequence[IPNetwork]) -> bool:
        revs = self._revs(snap)
        new = [c for c in cidrs if snap.pod_cidrs.get(c) != node]
        return self.store.txn(
            [
                *(cmp_absent(keys.cluster_pool_key(c)) for c in new),
                cmp_mod_revision(keys.podcidrs_key(node), _rev(revs.podcidrs.get(node))),
            ],
            [
                *(op_put(keys.cluster_pool_key(c), node) for c in new),
                op_put(keys.podcidrs_key(node), encode_pod_cidrs(cidrs)),
            ],
        ).succeeded

    def mark_gone(self, snap: OperatorSnapshot, node: str, now: float) -> bool:
        return self.store.create(keys.node_gone_key(node), json.dumps({"since": now}))

    def clear_gone(self, snap: OperatorSnapshot, node: str) -> bool:
        return self.store.delete_if(keys.node_gone_key(node), _rev(self._revs(snap).gone.get(node)))

    def reclaim(self, snap: OperatorSnapshot, node: str) -> bool:
        revs = self._revs(snap)
        held = [c for c, owner in snap.pod_cidrs.items() if owner == node]
        compare = [
            cmp_absent(keys.node_key(node)),
            cmp_mod_revision(keys.node_gone_key(node), _rev(revs.gone.get(node))),
            # a report from the node's agent since the snapshot cancels the reclaim
            cmp_mod_revision(keys.nodestate_key(node), _rev(revs.nodestate.get(node))),
            *(cmp_mod_revision(keys.cluster_pool_key(c), revs.allocations[c].mod_revision) for c in held),
        ]
        claims: set[str] = set()
        if node in revs.pool_allocations:
            compare.append(cmp_mod_revision(mp.ALLOCATIONS + node, _rev(revs.pool_allocations[node])))
            claims = _cidrs(mp.decode(revs.pool_allocations[node]).get("allocated") or [])
        success = [op_delete(keys.cluster_pool_key(c)) for c in held]
        success += [op_delete(mp.CLAIMS + c) for c in sorted(claims)]
        success += [
            op_delete(keys.podcidrs_key(node)),
            op_delete(mp.ALLOCATIONS + node),
            op_delete(mp.REQUESTS + node),
            op_delete(keys.node_gone_key(node)),
            op_delete(keys.nodestate_key(node)),
        ]
        return self.store.txn(compare, success).succeeded

    def report_pool(self, status: Mapping[str, Any], waiting: Mapping[str, str]) -> None:
        """One document (``podnet status`` reads it); it names the waiting nodes itself."""
        self.store.put(keys.OPERATOR_STATUS_KEY, json.dumps(dict(status)))

    def create_pool(self, name: str, spec: Mapping[str, Any], now: float) -> bool:
        return self.store.create(mp.POOLS + name, json.dumps({"spec": dict(spec), "created": now}))

    def set_node_pools(
        self,
        snap: OperatorSnapshot,
        node: str,
        allocated: Sequence[Mapping[str, Any]] | None,
        errors: Mapping[str, str],
    ) -> bool:
        revs = self._revs(snap)
        current = mp.decode(revs.pool_allocations.get(node))
        before = list(current.get("allocated") or [])
        doc = {"allocated": before if allocated is None else list(allocated), "errors": dict(errors)}
        if doc == {"allocated": before, "errors": current.get("errors") or {}}:
            return True
        old, new = _cidrs(before), _cidrs(doc["allocated"])
        return self.store.txn(
            [
                cmp_mod_revision(mp.ALLOCATIONS + node, _rev(revs.pool_allocations.get(node))),
                cmp_mod_revision(mp.REQUESTS + node, _rev(revs.requests.get(node))),
                *(cmp_absent(mp.CLAIMS + c) for c in sorted(new - old)),
            ],
            [
                op_put(mp.ALLOCATIONS + node, json.dumps(doc)),
                *(op_put(mp.CLAIMS + c, node) for c in sorted(new - old)),
                *(op_delete(mp.CLAIMS + c) for c in sorted(old - new)),
            ],
        ).succeeded

    def set_pool_status(self, pool: PoolObject, status: Mapping[str, Any]) -> None:
        self.store.put(mp.POOL_STATUS + pool.name, json.dumps(dict(status)))

    def watch(self, on_change: Callable[[], None], pools: bool) -> Stoppable:
        prefixes = (keys.NODES_PREFIX, mp.POOLS, mp.REQUESTS) if pools else (keys.NODES_PREFIX,)
        return Watches([PrefixWatcher(self.store, p, lambda _e: on_change()).start() for p in prefixes])

    def close(self) -> None:
        self.store.close()


def _cidrs(allocated: Sequence[Mapping[str, Any]]) -> set[str]:
    """The CIDRs of a node's ``allocated`` list of pool CIDRs."""
    return {str(c) for entry in allocated if isinstance(entry, Mapping) for c in entry.get("cidrs") or []}


def _since(kv: KV) -> float:
    try:
        return float(json.loads(kv.value).get("since", 0))
    except (ValueError, TypeError, AttributeError):
        log.warning("ignoring unreadable gone marker %s", kv.key)
        return 0.0


def _liveness(nodestate: Mapping[str, KV]) -> dict[str, NodeLiveness]:
    found = {}
    for name, kv in nodestate.items():
        try:
            data = json.loads(kv.value)
            found[name] = NodeLiveness(float(data["heartbeat"]), int(data.get("endpoints", 0)))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable node state %s", kv.key)
    return found
