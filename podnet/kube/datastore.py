"""``datastore: kubernetes``: the agent's node record is a PodnetNode object, its peers are the
PodnetNodes whose Node object exists, the operator's pod CIDRs are ``spec.ipam.podCIDRs``.

Design fact: a node is in the cluster while its Node object exists (deleting the Node takes its
routes off every peer within a watch event), not while its agent runs: an agent that restarts or
dies leaves its PodnetNode, and its peers keep routing to its pods, as with CiliumNode. The agent
applies only its own fields (server-side apply, field manager ``podnet-agent``) and its status.
One live agent per node: its identity is in the ``podnet.io/agent`` annotation, and a different
identity whose ``status.lastSeen`` is fresher than ``OWNER_TTL`` is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from podnet.kube.client import KubeConnectError, connect, server_version
from podnet.kube.convert import AGENT_MANAGER, agent_spec, from_time, node_pod_cidrs, record_of, to_time
from podnet.kube.resources import PodnetNode
from podnet.kube.watch import KubeEvent, ResourceWatcher
from podnet.model import IPNetwork
from podnet.statusdoc.datastore import KUBERNETES, StoreHealth
from podnet.store.client import Backoff, OutageLog
from podnet.store.datastore import DatastoreError
from podnet.store.nodes import NodeEvent, NodeOwnedError, NodeRecord

log = logging.getLogger(__name__)

OWNER_ANNOTATION = "podnet.io/agent"
OWNER_TTL = 45.0  # seconds: an agent reports every HEARTBEAT_INTERVAL (10 s) at most
NOT_FOUND, FORBIDDEN, UNAUTHORIZED = 404, 403, 401
PROBE_INTERVAL = 10.0
NO_NODE_CIDR = (
    "its Node has no spec.podCIDRs (nor a network.podnet.io/ipv4-pod-cidr annotation): ipam.mode "
    "kubernetes needs kube-controller-manager with --allocate-node-cidrs --cluster-cidr"
)
NO_CIDR_YET = (
    "its podnetnode has no spec.ipam.podCIDRs yet: is `podnet operator --datastore kubernetes` running?"
)


class KubeDatastoreError(DatastoreError):
    """The API server cannot be used as the datastore; the message says what to do."""


def _explain(exc: Exception, what: str) -> str:
    if isinstance(exc, ApiError):
        code = exc.status.code
        if code == UNAUTHORIZED:
            return (
                f"{what}: the API server refused the credentials (401); check k8sKubeconfigPath or the token"
            )
        if code == FORBIDDEN:
            return (
                f"{what}: forbidden (403): {exc.status.message}; bind the agent's account to the "
                "podnet-agent ClusterRole (deploy/kubernetes/rbac.yaml)"
            )
        if code == NOT_FOUND:
            return f"{what}: not found (404): apply deploy/kubernetes/crds.yaml (the PodnetNode CRD)"
        return f"{what}: {exc.status.code} {exc.status.message}"
    return f"{what}: {exc}"


class KubeDatastore:
    kind = "kubernetes"

    def __init__(self, make_client: Callable[[], Client], cidrs_from_node: bool = False) -> None:
        """``cidrs_from_node``: pod CIDRs are the Node objects' ``spec.podCIDRs`` (ipam.mode
        kubernetes, kube-controller-manager assigns them), not the operator's PodnetNode field."""
        self.make_client = make_client  # for the IPAM modes that watch the node's own object
        self.client = make_client()
        self.cidrs_from_node = cidrs_from_node

    @classmethod
    def open(cls, kubeconfig: Path | None, timeout: float, cidrs_from_node: bool = False) -> KubeDatastore:
        """Connect and check that PodnetNodes can be listed, retrying until ``timeout``."""
        try:
            store = cls(lambda: connect(kubeconfig), cidrs_from_node)
        except KubeConnectError as exc:
            raise KubeDatastoreError(str(exc)) from None
        deadline = time.monotonic() + timeout
        outage, backoff = OutageLog(log, "connecting to the Kubernetes API server"), Backoff(0.25, 5.0)
        while True:
            try:
                list(store.client.list(PodnetNode, chunk_size=1))
                outage.recovered()
                return store
            except ApiError as exc:
                if exc.status.code in (UNAUTHORIZED, FORBIDDEN, NOT_FOUND) or time.monotonic() > deadline:
                    store.close()
                    raise KubeDatastoreError(_explain(exc, "listing podnetnodes")) from None
                outage.failed(exc)
            except Exception as exc:  # connection refused, TLS, timeouts: the API server may be starting
                if time.monotonic() > deadline:
                    store.close()
                    raise KubeDatastoreError(
                        _explain(exc, "cannot reach the Kubernetes API server")
                    ) from None
                outage.failed(exc)
            time.sleep(backoff.next())

    def register(self, name: str, owner: str) -> KubeRegistration:
        return KubeRegistration(self.client, name, owner)

    def _get(self, name: str) -> Any:
        try:
            return self.client.get(PodnetNode, name)
        except ApiError as exc:
            if exc.status.code == NOT_FOUND:
                return None
            raise DatastoreError(_explain(exc, f"reading podnetnode {name}")) from None

    def pod_cidrs(self, name: str) -> tuple[IPNetwork, ...]:
        if self.cidrs_from_node:
            return self._node_cidrs(name)
        obj = self._get(name)
        return record_of(name, obj.spec, obj.status).node.pod_cidrs if obj is not None else ()

    def _node_cidrs(self, name: str) -> tuple[IPNetwork, ...]:
        try:
            node = self.client.get(Node, name)
        except ApiError as exc:
            if exc.status.code == NOT_FOUND:
                return ()
            raise DatastoreError(_explain(exc, f"reading node {name}")) from None
        spec = node.spec.podCIDRs if node.spec else None
        return node_pod_cidrs(spec, node.metadata.annotations)

    def wait_pod_cidrs(self, name: str, timeout: float) -> tuple[IPNetwork, ...]:
        if self.cidrs_from_node:
            return self._wait_node_cidrs(name, timeout)
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                obj = self._get(name)
            except DatastoreError as exc:
                why = str(exc)
                obj = None
            if obj is not None:
                cidrs = record_of(name, obj.spec, obj.status).node.pod_cidrs
                if cidrs:
                    return cidrs
                error = ((obj.status or {}).get("ipam") or {}).get("operatorStatus", {}).get("error")
                why = f"the operator says: {error}" if error else NO_CIDR_YET
            elif not why:
                why = f"there is no podnetnode {name}"
            time.sleep(0.2)
        raise TimeoutError(f"node {name} got no pod CIDR within {timeout:g}s: {why}")

    def _wait_node_cidrs(self, name: str, timeout: float) -> tuple[IPNetwork, ...]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                cidrs = self._node_cidrs(name)
            except DatastoreError:
                cidrs = ()
            if cidrs:
                return cidrs
            time.sleep(0.2)
        raise TimeoutError(f"node {name} got no pod CIDR within {timeout:g}s: {NO_NODE_CIDR}")

    def watch_nodes(self, on_change: Callable[[NodeEvent], None]) -> KubeNodeWatch:
        return KubeNodeWatch(self.make_client, on_change, self.cidrs_from_node).start()

    def report(self, name: str, endpoints: int, now: float) -> None:
        status = {"status": {"health": "ok", "endpoints": endpoints, "lastSeen": to_time(now)}}
        try:
            self.client.patch(PodnetNode.Status, name, status, patch_type=PatchType.MERGE)
        except Exception as exc:
            raise DatastoreError(_explain(exc, f"reporting podnetnode {name}")) from None

    def close(self) -> None:
        self.client.close()

    def version(self) -> str:
        return server_version(self.client)


class KubeRegistration:
    """The agent's PodnetNode: its own fields applied server-side, the operator's left alone."""

    def __init__(self, client: Client, name: str, owner: str) -> None:
        self._client = client
        self.name = name
        self.owner = owner
        self._record: NodeRecord | None = None
        self._claim()

    def _claim(self) -> None:
        try:
            obj = self._client.get(PodnetNode, self.name)
        except ApiError as exc:
            if exc.status.code == NOT_FOUND:
                return
            raise DatastoreError(_explain(exc, f"reading podnetnode {self.name}")) from None
        holder = (obj.metadata.annotations or {}).get(OWNER_ANNOTATION)
        seen = (obj.status or {}).get("lastSeen")
        if holder in (None, self.owner) or not seen:
            return
        age = time.time() - from_time(seen)
        if age < OWNER_TTL:
            raise NodeOwnedError(
                f"node {self.name} is already served by another agent ({holder}, last seen {age:.0f}s ago); "
                f"stop that agent first, or wait {OWNER_TTL - age:.0f}s if it is gone; nothing was written"
            )

    @property
    def record(self) -> NodeRecord | None:
        return self._record

    def publish(self, record: NodeRecord) -> None:
        if record.node.name != self.name:
            raise ValueError(f"registration of {self.name} cannot publish {record.node.name}")
        obj = PodnetNode(
            metadata=ObjectMeta(name=self.name, annotations={OWNER_ANNOTATION: self.owner}),
            spec=agent_spec(record),
        )
        try:
            self._client.apply(obj, field_manager=AGENT_MANAGER, force=True)
        except Exception as exc:
            raise DatastoreError(_explain(exc, f"publishing podnetnode {self.name}")) from None
        self._record = record

    def ensure(self, seen: NodeRecord | None) -> bool:
        """Apply our fields again when the API server's copy lacks or differs from them."""
        record = self._record
        if record is None or (seen is not None and agent_spec(seen) == agent_spec(record)):
            return False
        log.warning("podnetnode %s %s; applying it again", self.name,
                    "vanished" if seen is None else "was changed by someone else")  # fmt: skip
        self.publish(record)
        return True

    def close(self, revoke: bool = True) -> None:
        """Nothing to give back: the PodnetNode stays while the Node exists (see the module doc)."""


class KubeNodeWatch:
    """Peers = PodnetNodes whose Node object exists, from two watches; one ``NodeEvent`` per change."""

    def __init__(
        self,
        make_client: Callable[[], Client],
        on_change: Callable[[NodeEvent], None],
        cidrs_from_node: bool = False,
    ) -> None:
        self._on_change = on_change
        self._cidrs_from_node = cidrs_from_node
        self._lock = threading.Lock()
        self._records: dict[str, NodeRecord] = {}
        self._nodes: dict[str, tuple[IPNetwork, ...]] = {}  # Node objects and their pod CIDRs
        self._emitted: dict[str, NodeRecord] = {}
        self._pnn = ResourceWatcher(make_client, PodnetNode, self._on_pnn)
        self._node = ResourceWatcher(make_client, Node, self._on_node)

    def start(self) -> KubeNodeWatch:
        self._node.start()
        self._pnn.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self._node.wait_synced(timeout) and self._pnn.wait_synced(
            max(0.0, deadline - time.monotonic())
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._pnn.stop(timeout)
        self._node.stop(timeout)

    def _on_pnn(self, event: KubeEvent) -> None:
        with self._lock:
            if event.type == "DELETED":
                self._records.pop(event.name, None)
            else:
                try:
                    self._records[event.name] = record_of(event.name, event.obj.spec, event.obj.status)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable podnetnode %s: %s", event.name, exc)
                    return
            self._emit()

    def _on_node(self, event: KubeEvent) -> None:
        with self._lock:
            if event.type == "DELETED":
                self._nodes.pop(event.name, None)
            else:
                obj = event.obj
                try:
                    cidrs = node_pod_cidrs(obj.spec.podCIDRs if obj.spec else None, obj.metadata.annotations)
                except ValueError as exc:
                    log.warning("node %s: unreadable pod CIDRs: %s", event.name, exc)
                    cidrs = ()
                self._nodes[event.name] = cidrs
            self._emit()

    def _record(self, name: str, record: NodeRecord) -> NodeRecord:
        """With ``cidrs_from_node``, the node's pod CIDRs are its Node object's."""
        if not self._cidrs_from_node:
            return record
        return dataclasses.replace(record, node=dataclasses.replace(record.node, pod_cidrs=self._nodes[name]))

    def _emit(self) -> None:
        current = {n: self._record(n, r) for n, r in self._records.items() if n in self._nodes}
        before, self._emitted = self._emitted, current
        for name in sorted(set(before) | set(current)):
            old, new = before.get(name), current.get(name)
            if old == new:
                continue
            kind: Literal["add", "update", "delete"] = (
                "delete" if new is None else ("add" if old is None else "update")
            )
            self._on_change(NodeEvent(kind, name, new, dict(current)))


class KubeProbe:
    """The agent's status line for the API server (Cilium's ``Kubernetes: Ok 1.20 (v1.20.2)``)."""

    name = "kubernetes"

    def __init__(self, datastore: KubeDatastore) -> None:
        self._datastore = datastore
        self.version = ""
        self.last_success = 0.0
        self.failing_since = 0.0
        self.error = ""
        self._outage = OutageLog(log, "Kubernetes API server probe")

    def start(self, node: object, stop: threading.Event) -> None:
        self.probe()
        threading.Thread(target=self._loop, args=(stop,), name="kube-probe", daemon=True).start()

    def probe(self) -> bool:
        try:
            self.version = self._datastore.version()
        except Exception as exc:
            self._outage.failed(exc)
            self.failing_since = self.failing_since or time.time()
            self.error = str(exc)
            return False
        self._outage.recovered()
        self.last_success, self.failing_since, self.error = time.time(), 0.0, ""
        return True

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(PROBE_INTERVAL):
            self.probe()

    def after_round(self, node: object, round_plan: object, peers: object) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        return StoreHealth(
            kind=KUBERNETES,
            state="ok" if not self.error else "unreachable",
            version=self.version or None,
            last_success=self.last_success or None,
            failing_since=self.failing_since or None,
            error=self.error or None,
        ).to_json()
