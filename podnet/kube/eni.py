"""ENI IPAM's documents on ``datastore: kubernetes``, as Cilium keeps them on CiliumNode: the
agent's spec in the PodnetNode's ``spec.eni``, the addresses it uses (and those it has stopped
using, for the release handshake of ``podnet.store.eni``) in ``status.ipam.eni``, the
operator's findings (instance, limits, ENIs and their addresses, release marks, errors) in
``status.eni``. Each writer merge-patches only its own field; a watch of PodnetNode objects (one
node's for an agent, all for the operator) keeps the view current.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Self

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from podnet.kube.resources import PodnetNode
from podnet.kube.watch import KubeEvent, ResourceWatcher
from podnet.store.eni import SPEC, STATUS, USED, used_doc

NOT_FOUND = 404


def docs_of(obj: Any) -> dict[str, dict[str, Any]]:
    """The three ENI documents of a PodnetNode (a lightkube object or its dict) (pure)."""
    raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    return {
        SPEC: dict(spec.get("eni") or {}),
        USED: dict((status.get("ipam") or {}).get("eni") or {}),
        STATUS: dict(status.get("eni") or {}),
    }


def routed_addresses(spec: Mapping[str, Any], status: Mapping[str, Any]) -> set[str]:
    """What peers route to the node beyond its CIDRs (``IpamSpec.kube_addresses``, pure): the
    secondary addresses of its ENIs plus those its pods still use (the VPC delivers them; peers
    know them as the node's)."""
    addresses = set(((status.get("ipam") or {}).get("eni") or {}).get("used") or {})
    for eni in ((status.get("eni") or {}).get("enis") or {}).values():
        addresses |= set(eni.get("addresses") or [])
    return addresses


def replacing(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that turns ``old`` into ``new`` (pure): ``new``, with ``None`` for
    every key of ``old`` it lacks, at every depth where both are maps."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        prev = old.get(k)
        patch[k] = replacing(prev, v) if isinstance(prev, Mapping) and isinstance(v, Mapping) else v
    return patch


class KubeEniDocs:
    """The ENI documents of one node's PodnetNode (or every node's), from a watch."""

    def __init__(
        self, connect: Callable[[], Client], node: str | None, on_change: Callable[[], None]
    ) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._docs: dict[str, dict[str, dict[str, Any]]] = {}
        fields = {"metadata.name": node} if node else None
        self._watcher = ResourceWatcher(connect, PodnetNode, self._on_event, fields=fields)

    def start(self) -> Self:
        self._watcher.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._watcher.wait_synced(timeout)

    def stop(self) -> None:
        self._watcher.stop()

    def _on_event(self, event: KubeEvent) -> None:
        with self._lock:
            if event.type == "DELETED":
                self._docs.pop(event.name, None)
            else:
                self._docs[event.name] = docs_of(event.obj)
        self._on_change()

    def get_doc(self, node: str, part: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._docs.get(node, {}).get(part) or {})

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(n for n, docs in self._docs.items() if docs.get(SPEC))


class KubeEniState:
    """Reads and merge patches of the ENI fields of PodnetNode objects."""

    def __init__(self, connect: Callable[[], Client]) -> None:
        self._connect = connect
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _c(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def view(self, node: str | None, on_change: Callable[[], None]) -> KubeEniDocs:
        return KubeEniDocs(self._connect, node, on_change)

    def read(self, node: str, part: str) -> dict[str, Any]:
        try:
            obj = self._c().get(PodnetNode, node)
        except ApiError as exc:
            if exc.status.code == NOT_FOUND:
                return {}
            raise
        return docs_of(obj)[part]

    def write_spec(self, node: str, spec: Mapping[str, Any]) -> None:
        """``spec.eni``; the PodnetNode is created when the agent has not made it yet."""
        try:
            self._replace(node, SPEC, dict(spec))
        except ApiError as exc:
            if exc.status.code != NOT_FOUND:
                raise
            self._c().create(PodnetNode(metadata=ObjectMeta(name=node), spec={"eni": dict(spec)}))

    def write_used(self, node: str, used: Mapping[str, str], release_ready: Mapping[str, int]) -> None:
        self._replace(node, USED, used_doc(used, release_ready))

    def write_status(self, node: str, status: Mapping[str, Any]) -> None:
        self._replace(node, STATUS, dict(status))

    def _replace(self, node: str, part: str, new: dict[str, Any]) -> None:
        """The document replaced whole in one merge patch: keys it no longer has are nulled
        (a merge patch alone would keep them, e.g. an address given back)."""
        client = self._c()
        old = docs_of(client.get(PodnetNode, node))[part]
        body = replacing(old, new)
        if part == SPEC:
            client.patch(PodnetNode, node, {"spec": {"eni": body}}, patch_type=PatchType.MERGE)
        elif part == USED:
            patch = {"status": {"ipam": {"eni": body}}}
            client.patch(PodnetNode.Status, node, patch, patch_type=PatchType.MERGE)
        else:
            client.patch(PodnetNode.Status, node, {"status": {"eni": body}}, patch_type=PatchType.MERGE)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
