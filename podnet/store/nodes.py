"""Typed node helpers: register a node on a lease, list and watch nodes, read/write pod CIDRs.

A registration is ``NodeInfo.to_json()`` plus ``requestedPodCIDRs`` (the CIDRs the node asks the
operator for, e.g. from the lab topology). The operator answers in ``/podnet/v1/podcidrs/<node>``,
which is not on the lease: a node that restarts gets the same CIDRs back.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from podnet.model import IPNetwork, NodeInfo
from podnet.store import keys
from podnet.store.client import LeaseKeeper, Store, StoreError
from podnet.store.watch import PrefixWatcher, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_NODE_TTL = 15


@dataclass(frozen=True)
class NodeRecord:
    """A node registration as stored: the node plus the pod CIDRs it asks for."""

    node: NodeInfo
    requested_pod_cidrs: tuple[IPNetwork, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**self.node.to_json(), "requestedPodCIDRs": [str(c) for c in self.requested_pod_cidrs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeRecord:
        return cls(
            node=NodeInfo.from_json(data),
            requested_pod_cidrs=tuple(ipaddress.ip_network(c) for c in data.get("requestedPodCIDRs") or []),
        )

    @classmethod
    def from_value(cls, value: bytes) -> NodeRecord:
        return cls.from_json(json.loads(value))


class NodeOwnedError(RuntimeError):
    """Another agent serves this node; nothing was written. The message says who and what to do."""


def _owner_value(owner: str) -> str:
    return json.dumps({"owner": owner, "pid": os.getpid(), "since": time.time()})


class NodeRegistration:
    """Keeps ``/podnet/v1/nodes/<name>`` alive on a lease, for one agent that owns the node.

    Ownership first: the lease's first grant claims ``/podnet/v1/agents/<name>`` for ``owner`` (an
    identity stable across restarts of the same agent: host and state directory). Another live
    owner means ``NodeOwnedError`` before anything else is written; the same owner (a restart
    after kill -9, whose old lease has not expired yet) takes the claim over. Nothing is published
    until ``publish(record)``, so a restarting agent can write its complete record at once and
    peers never see a degraded one. ``ensure(seen)`` restores the record when the store's copy
    vanished or differs (someone deleted or rewrote it).
    """

    def __init__(
        self, store: Store, name: str, owner: str, ttl: int = DEFAULT_NODE_TTL, interval: float | None = None
    ) -> None:
        self._store = store.clone()
        self._lock = threading.Lock()
        self.name = name
        self.owner = owner
        self._record: NodeRecord | None = None
        self._key = keys.node_key(name)
        self._lease = 0
        try:
            self._keeper = LeaseKeeper(store, ttl, on_granted=self._granted, interval=interval)
        except BaseException:
            self._store.close()
            raise

    @property
    def lease_id(self) -> int:
        return self._keeper.lease_id

    @property
    def record(self) -> NodeRecord | None:
        return self._record

    def _granted(self, lease: int) -> None:
        """Claim the node on ``lease`` and put the record back on it (after a lost lease too)."""
        with self._lock:
            claim_node(self._store, self.name, self.owner, lease)
            self._lease = lease
            if self._record is not None:
                self._store.put(self._key, json.dumps(self._record.to_json()), lease=lease)

    def publish(self, record: NodeRecord) -> None:
        """Write ``record`` (always: the caller decides when it changed)."""
        if record.node.name != self.name:
            raise ValueError(f"registration of {self.name} cannot publish {record.node.name}")
        with self._lock:
            self._record = record
            self._store.put(self._key, json.dumps(record.to_json()), lease=self._lease)

    update = publish

    def ensure(self, seen: NodeRecord | None) -> bool:
        """Put the record back when ``seen`` (the store's copy) is missing or differs; True if so."""
        record = self._record
        if record is None or seen == record:
            return False
        log.warning(
            "node record %s %s in the store; restoring it",
            self._key,
            "vanished" if seen is None else "was changed by someone else",
        )
        self.publish(record)
        return True

    def close(self, revoke: bool = True) -> None:
        """Stop the keepalive; with ``revoke`` the node key goes at once, else when the TTL runs out."""
        self._keeper.close(revoke=revoke)
        self._store.close()


def claim_node(store: Store, name: str, owner: str, lease: int) -> None:
    """Make ``owner`` the node's agent on ``lease``: create the claim, or take over a claim of the
    same owner; ``NodeOwnedError`` when another owner holds it."""
    key = keys.agent_key(name)
    for _ in range(5):
        current = store.get(key)
        if current is None:
            if store.create(key, _owner_value(owner), lease=lease):
                return
            continue
        try:
            holder = json.loads(current.value)
        except ValueError:
            holder = {}
        if holder.get("owner") != owner:
            since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("since", 0))))
            raise NodeOwnedError(
                f"node {name} is already served by another agent ({holder.get('owner', '?')}, pid "
                f"{holder.get('pid', '?')}, since {since}); stop that agent first, or wait for its lease "
                f"to expire (up to {DEFAULT_NODE_TTL}s) if it is gone; nothing was written"
            )
        if store.update(key, _owner_value(owner), current.mod_revision, lease=lease):
            return
    raise StoreError(f"could not claim node {name}: {key} keeps changing")


def register_node(
    store: Store,
    node: NodeInfo,
    ttl: int = DEFAULT_NODE_TTL,
    requested_pod_cidrs: Iterable[IPNetwork] = (),
    interval: float | None = None,
    owner: str | None = None,
) -> NodeRegistration:
    """Claim ``node`` and publish it under ``/podnet/v1/nodes/<name>`` on a lease kept alive in the
    background (``owner`` defaults to this process)."""
    reg = NodeRegistration(store, node.name, owner or f"{socket.gethostname()}:{os.getpid()}", ttl, interval)
    reg.publish(NodeRecord(node, tuple(requested_pod_cidrs)))
    return reg


def list_node_records(store: Store) -> dict[str, NodeRecord]:
    kvs, _ = store.list_prefix(keys.NODES_PREFIX)
    records: dict[str, NodeRecord] = {}
    for kv in kvs:
        try:
            records[keys.name_from_key(keys.NODES_PREFIX, kv.key)] = NodeRecord.from_value(kv.value)
        except (ValueError, KeyError) as exc:
            log.warning("skipping unreadable node registration %s: %s", kv.key, exc)
    return records


def list_nodes(store: Store) -> dict[str, NodeInfo]:
    return {name: rec.node for name, rec in list_node_records(store).items()}


@dataclass(frozen=True)
class NodeEvent:
    """One change of the node set, with the full set after it."""

    kind: Literal["add", "update", "delete"]
    name: str
    record: NodeRecord | None  # None for deletes
    nodes: Mapping[str, NodeRecord]


def watch_nodes(store: Store, on_change: Callable[[NodeEvent], None]) -> PrefixWatcher:
    """Start a watcher calling ``on_change`` for every node add/update/delete; ``.stop()`` it."""
    current: dict[str, NodeRecord] = {}

    def handle(event: WatchEvent) -> None:
        name = keys.name_from_key(keys.NODES_PREFIX, event.key)
        if event.kind == "delete":
            if current.pop(name, None) is not None:
                on_change(NodeEvent("delete", name, None, dict(current)))
            return
        try:
            record = NodeRecord.from_value(event.value)
        except (ValueError, KeyError) as exc:
            log.warning("ignoring unreadable node registration %s: %s", event.key, exc)
            return
        kind: Literal["add", "update"] = "update" if name in current else "add"
        current[name] = record
        on_change(NodeEvent(kind, name, record, dict(current)))

    return PrefixWatcher(store, keys.NODES_PREFIX, handle).start()


# --- pod CIDRs -------------------------------------------------------------------------------
def encode_pod_cidrs(cidrs: Iterable[IPNetwork]) -> str:
    return json.dumps({"podCIDRs": [str(c) for c in cidrs]})


def decode_pod_cidrs(value: bytes) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in json.loads(value).get("podCIDRs", []))


def get_pod_cidrs(store: Store, node_name: str) -> tuple[IPNetwork, ...]:
    """The pod CIDRs the operator gave ``node_name`` (empty if none yet)."""
    kv = store.get(keys.podcidrs_key(node_name))
    return decode_pod_cidrs(kv.value) if kv else ()


def put_pod_cidrs(store: Store, node_name: str, cidrs: Iterable[IPNetwork]) -> None:
    """Write a node's pod CIDRs directly (tests, static setups); the operator uses transactions."""
    store.put(keys.podcidrs_key(node_name), encode_pod_cidrs(cidrs))


def put_nodestate(store: Store, node_name: str, endpoints: int, now: float) -> None:
    """The agent's report that it is alive and how many pod endpoints it serves (not on a lease:
    it outlives the agent, so the operator can tell a node with pods from an empty one)."""
    store.put(keys.nodestate_key(node_name), json.dumps({"heartbeat": now, "endpoints": endpoints}))


def operator_status(store: Store) -> dict[str, Any] | None:
    """What the cluster-pool operator last reported (state, message, counts), if anything."""
    kv = store.get(keys.OPERATOR_STATUS_KEY)
    return json.loads(kv.value) if kv else None


def wait_for_pod_cidrs(
    store: Store, node_name: str, timeout: float, poll_interval: float = 0.1
) -> tuple[IPNetwork, ...]:
    """Block until the operator has given ``node_name`` pod CIDRs; raise ``TimeoutError`` naming why."""
    deadline = time.monotonic() + timeout
    last_error: StoreError | None = None
    while True:
        try:
            cidrs = get_pod_cidrs(store, node_name)
            if cidrs:
                return cidrs
        except StoreError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_interval)
    reason = str(last_error) if last_error else _why_no_cidr(store, node_name)
    raise TimeoutError(f"node {node_name} got no pod CIDR within {timeout:g}s: {reason}")


def _why_no_cidr(store: Store, node_name: str) -> str:
    try:
        status = operator_status(store)
        registered = store.get(keys.node_key(node_name)) is not None
    except StoreError as exc:
        return str(exc)
    if not registered:
        return f"the node is not registered under {keys.node_key(node_name)}"
    if status is None:
        return "no operator has reported yet: is `podnet operator` running against this etcd?"
    said = f"operator reports {status.get('state')}: {status.get('message')}"
    age = time.time() - float(status.get("updated", 0))
    if age > 3 * float(status.get("heartbeat", 10.0)):
        return (
            f"the operator last reported {age:.0f}s ago and is not updating its status (is `podnet "
            f"operator` running?); what it said then: {said}"
        )
    return said
