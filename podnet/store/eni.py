"""ENI IPAM's keys in etcd, one writer each (CiliumNode's ``spec.eni`` and ``status.eni``):

    /podnet/v1/ipam/eni/<node>/spec     the node's agent: preAllocate, subnets, groups ...
    /podnet/v1/ipam/eni/<node>/used     the node's agent: {"used": {ip: owner}, "releaseReady": {ip: epoch}}
    /podnet/v1/ipam/eni/<node>/status   the operator: instance, limits, ENIs, "release", errors, calls

Design fact: releasing an address is a handshake, so that an address the agent is handing out is
never unassigned under it: the operator marks it in ``status.release`` with a new epoch, the agent
stops using it and lists it in ``releaseReady`` with that epoch (unless a pod holds it), and only
for a matching epoch does the operator call UnassignPrivateIpAddresses (an answer to an older mark
of the same address never counts). None of the keys is on a lease: a node's ENIs outlive its agent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from podnet.store.client import Store
from podnet.store.keys import ROOT
from podnet.store.multipool import decode_value
from podnet.store.watch import PrefixCache

PREFIX = ROOT + "ipam/eni/"
SPEC, USED, STATUS = "spec", "used", "status"


def key(node: str, part: str) -> str:
    return f"{PREFIX}{node}/{part}"


def split_key(full: str) -> tuple[str, str] | None:
    """(node, part) of an ENI key, or None."""
    rest = full[len(PREFIX) :] if full.startswith(PREFIX) else ""
    node, sep, part = rest.partition("/")
    return (node, part) if sep and node and part in (SPEC, USED, STATUS) else None


class EniView(PrefixCache):
    """A watch over ENI keys (one node's, or every node's for the operator), decoded."""

    def __init__(self, store: Store, node: str | None, on_change: Callable[[], None]) -> None:
        super().__init__(store, f"{PREFIX}{node}/" if node else PREFIX, on_change)

    def get_doc(self, node: str, part: str) -> dict[str, Any]:
        full = key(node, part)
        return decode_value(full, self.get(full))

    def nodes(self) -> list[str]:
        """Nodes that published an ENI spec."""
        return sorted({w[0] for k, _ in self.items() if (w := split_key(k)) is not None and w[1] == SPEC})


def write_spec(store: Store, node: str, spec: Mapping[str, Any]) -> None:
    store.put(key(node, SPEC), json.dumps(dict(spec), sort_keys=True))


def write_used(store: Store, node: str, used: Mapping[str, str], release_ready: Mapping[str, int]) -> None:
    doc = {"used": dict(sorted(used.items())), "releaseReady": dict(sorted(release_ready.items()))}
    store.put(key(node, USED), json.dumps(doc, sort_keys=True))


def write_status(store: Store, node: str, status: Mapping[str, Any]) -> None:
    store.put(key(node, STATUS), json.dumps(dict(status), sort_keys=True))


def read(store: Store, node: str, part: str) -> dict[str, Any]:
    kv = store.get(key(node, part))
    return decode_value(kv.key, kv.value) if kv is not None else {}
