"""The cluster store: etcd under ``/podnet/v1/`` (layout in docs/store.md)."""

from podnet.store.client import KV, LeaseKeeper, Store, StoreError, TxnResult
from podnet.store.nodes import (
    NodeEvent,
    NodeOwnedError,
    NodeRecord,
    NodeRegistration,
    get_pod_cidrs,
    list_node_records,
    list_nodes,
    operator_status,
    put_pod_cidrs,
    register_node,
    wait_for_pod_cidrs,
    watch_nodes,
)
from podnet.store.watch import PrefixWatcher, WatchEvent

__all__ = [
    "KV",
    "LeaseKeeper",
    "NodeEvent",
    "NodeOwnedError",
    "NodeRecord",
    "NodeRegistration",
    "PrefixWatcher",
    "Store",
    "StoreError",
    "TxnResult",
    "WatchEvent",
    "get_pod_cidrs",
    "list_node_records",
    "list_nodes",
    "operator_status",
    "put_pod_cidrs",
    "register_node",
    "wait_for_pod_cidrs",
    "watch_nodes",
]
