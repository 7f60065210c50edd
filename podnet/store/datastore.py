"""The cluster datastore as an agent uses it, whichever it is: the embedded etcd (the default) or
the Kubernetes API server (``datastore: kubernetes``, ``podnet.kube.datastore``).

Design fact: an agent needs five things of it: claim and publish its node, read the pod CIDRs the
operator gave it, watch every node, report that it is alive with how many endpoints it serves, and
say whether the datastore answers. The datapath never needs it: a datastore that is away stops
changes, never traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from podnet.model import IPNetwork
from podnet.store.client import Store, StoreError
from podnet.store.nodes import (
    NodeEvent,
    NodeRecord,
    NodeRegistration,
    get_pod_cidrs,
    put_nodestate,
    wait_for_pod_cidrs,
    watch_nodes,
)

DATASTORES = ("etcd", "kubernetes")


class Registration(Protocol):
    """One agent's hold on its node's record."""

    def publish(self, record: NodeRecord) -> None: ...

    def ensure(self, seen: NodeRecord | None) -> bool: ...

    def close(self, revoke: bool = True) -> None: ...


class NodeWatch(Protocol):
    def wait_synced(self, timeout: float) -> bool: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class Datastore(Protocol):
    kind: str  # "etcd" | "kubernetes"

    def register(self, name: str, owner: str) -> Registration:
        """Claim the node for ``owner`` (``NodeOwnedError`` when another live agent has it);
        nothing is published before ``publish``."""
        ...

    def pod_cidrs(self, name: str) -> tuple[IPNetwork, ...]: ...

    def wait_pod_cidrs(self, name: str, timeout: float) -> tuple[IPNetwork, ...]:
        """Until the operator has given the node pod CIDRs; ``TimeoutError`` saying why not."""
        ...

    def watch_nodes(self, on_change: Callable[[NodeEvent], None]) -> NodeWatch: ...

    def report(self, name: str, endpoints: int, now: float) -> None:
        """The agent is alive and serves ``endpoints`` pods (raises ``DatastoreError``)."""
        ...

    def close(self) -> None: ...


class DatastoreError(RuntimeError):
    """The datastore did not answer or refused; the message names it."""


class EtcdDatastore:
    """podnet's own keys in etcd (docs/store.md): node records on leases, pod CIDRs and node
    state written by transactions."""

    kind = "etcd"

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, name: str, owner: str) -> NodeRegistration:
        return NodeRegistration(self.store, name, owner)

    def pod_cidrs(self, name: str) -> tuple[IPNetwork, ...]:
        return get_pod_cidrs(self.store, name)

    def wait_pod_cidrs(self, name: str, timeout: float) -> tuple[IPNetwork, ...]:
        return wait_for_pod_cidrs(self.store, name, timeout)

    def watch_nodes(self, on_change: Callable[[NodeEvent], None]) -> NodeWatch:
        return watch_nodes(self.store, on_change)

    def report(self, name: str, endpoints: int, now: float) -> None:
        try:
            put_nodestate(self.store, name, endpoints, now)
        except StoreError as exc:
            raise DatastoreError(str(exc)) from exc

    def close(self) -> None:
        self.store.close()
