"""Multi-pool IPAM's keys in etcd (``datastore: etcd``), the same fields as on Kubernetes:

    /podnet/v1/ipam/multi-pool/pools/<pool>         {"spec": {"ipv4": {cidrs, maskSize}}, "created"}
    /podnet/v1/ipam/multi-pool/pool-status/<pool>   {"error", "nodes"}            (the operator)
    /podnet/v1/ipam/multi-pool/requests/<node>      {"requested": [...]}          (the node's agent)
    /podnet/v1/ipam/multi-pool/allocations/<node>   {"allocated": [...], "errors"} (the operator)
    /podnet/v1/ipam/multi-pool/cidrs/<cidr>         the node holding it            (the operator)

Design fact: none is on a lease (a node's CIDRs outlive its agent), and each has one writer, so
the operator's transactions compare the node's request and allocation revisions it planned from;
a CIDR added to a node's allocation is claimed by CAS-creating its ``cidrs/`` key in the same
transaction, so two operators planning from different snapshots never give it to two nodes.
``EtcdPoolView`` gives the agent what ``kube.nodeipam.NodeIpamView`` gives it on Kubernetes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from podnet.store.client import KV, Store
from podnet.store.keys import ROOT
from podnet.store.watch import PrefixCache

log = logging.getLogger(__name__)

PREFIX = ROOT + "ipam/multi-pool/"
POOLS = PREFIX + "pools/"
POOL_STATUS = PREFIX + "pool-status/"
REQUESTS = PREFIX + "requests/"
ALLOCATIONS = PREFIX + "allocations/"
CLAIMS = PREFIX + "cidrs/"


def decode(kv: KV | None) -> dict[str, Any]:
    return decode_value(kv.key, kv.value) if kv is not None else {}


def decode_value(key: str, raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("ignoring unreadable %s", key)
        return {}
    return value if isinstance(value, dict) else {}


class EtcdPoolView(PrefixCache):
    """One watch over the multi-pool keys; the node's own request and allocation, and the pools."""

    def __init__(self, store: Store, node: str, on_change: Callable[[], None]) -> None:
        super().__init__(store, PREFIX, on_change)
        self.node = node
        self._store = store

    def _get(self, key: str) -> dict[str, Any]:
        return decode_value(key, self.get(key))

    def spec_ipam(self) -> dict[str, Any]:
        requested = self._get(REQUESTS + self.node).get("requested") or []
        allocated = self._get(ALLOCATIONS + self.node).get("allocated") or []
        return {"pools": {"requested": requested, "allocated": allocated}}

    def status_ipam(self) -> dict[str, Any]:
        errors = self._get(ALLOCATIONS + self.node).get("errors") or {}
        return {"pools": {pool: {"error": error} for pool, error in errors.items()}}

    def pools(self) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
        values = dict(self.items())
        found = [
            (
                key[len(POOLS) :],
                decode_value(key, raw),
                decode_value(key, values.get(POOL_STATUS + key[len(POOLS) :])),
            )
            for key, raw in values.items()
            if key.startswith(POOLS)
        ]
        found.sort(key=lambda f: (float(f[1].get("created") or 0), f[0]))
        return [(name, doc.get("spec") or {}, status) for name, doc, status in found]

    def write_requested(self, requested: Sequence[Mapping[str, Any]]) -> None:
        self._store.put(REQUESTS + self.node, json.dumps({"requested": list(requested)}))
