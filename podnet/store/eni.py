"""ENI IPAM's state: three documents per node, one writer each (CiliumNode's ``spec.eni`` and
``status.eni``), behind ``EniState``, which the agent's allocator and the one ENI operator use
whatever the datastore. In etcd (``EtcdEniState``) they are keys; on Kubernetes
(``podnet.kube.eni``) fields of the node's PodnetNode:

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
from typing import Any, Protocol, Self

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


class EniDocs(Protocol):
    """A live view of the ENI documents (one node's, or every node's for the operator)."""

    def start(self) -> Self: ...

    def wait_synced(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...

    def get_doc(self, node: str, part: str) -> dict[str, Any]:
        """``part`` (SPEC, USED or STATUS) of ``node``; ``{}`` when absent."""
        ...

    def nodes(self) -> list[str]:
        """Nodes that published an ENI spec."""
        ...


class EniState(Protocol):
    """Where a datastore keeps the ENI documents."""

    def view(self, node: str | None, on_change: Callable[[], None]) -> EniDocs: ...

    def read(self, node: str, part: str) -> dict[str, Any]: ...

    def write_spec(self, node: str, spec: Mapping[str, Any]) -> None: ...

    def write_used(self, node: str, used: Mapping[str, str], release_ready: Mapping[str, int]) -> None: ...

    def write_status(self, node: str, status: Mapping[str, Any]) -> None: ...


def used_doc(used: Mapping[str, str], release_ready: Mapping[str, int]) -> dict[str, Any]:
    return {"used": dict(sorted(used.items())), "releaseReady": dict(sorted(release_ready.items()))}


class EtcdEniState:
    """The documents as etcd keys (the layout above)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def view(self, node: str | None, on_change: Callable[[], None]) -> EniView:
        return EniView(self.store, node, on_change)

    def read(self, node: str, part: str) -> dict[str, Any]:
        return read(self.store, node, part)

    def write_spec(self, node: str, spec: Mapping[str, Any]) -> None:
        write_spec(self.store, node, spec)

    def write_used(self, node: str, used: Mapping[str, str], release_ready: Mapping[str, int]) -> None:
        write_used(self.store, node, used, release_ready)

    def write_status(self, node: str, status: Mapping[str, Any]) -> None:
        write_status(self.store, node, status)


def write_spec(store: Store, node: str, spec: Mapping[str, Any]) -> None:
    store.put(key(node, SPEC), json.dumps(dict(spec), sort_keys=True))


def write_used(store: Store, node: str, used: Mapping[str, str], release_ready: Mapping[str, int]) -> None:
    store.put(key(node, USED), json.dumps(used_doc(used, release_ready), sort_keys=True))


def write_status(store: Store, node: str, status: Mapping[str, Any]) -> None:
    store.put(key(node, STATUS), json.dumps(dict(status), sort_keys=True))


def read(store: Store, node: str, part: str) -> dict[str, Any]:
    kv = store.get(key(node, part))
    return decode_value(kv.key, kv.value) if kv is not None else {}
