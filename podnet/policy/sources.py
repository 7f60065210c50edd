"""Where an agent reads NetworkPolicies, namespaces' labels and the cluster's pods, per datastore.

- ``kubernetes``: NetworkPolicy, Pod and Namespace objects, each kind by a list-then-watch loop
  (``podnet.kube.watch``); "covered" is each kind's resourceVersion.
- ``etcd`` (no API server): NetworkPolicy and Namespace documents a user put there with
  ``podnet policy apply -f`` (``podnet.policy.documents``), and each node's pods as its agent
  publishes them from its CNI records (``/podnet/v1/endpoints/<node>``: names, labels, addresses;
  labels come from the runtime's ``args.cni.labels``, never from a pod). "covered" is the etcd
  revision. A named port resolves to nothing on etcd (no container specs): status says so.

Design fact: a source never applies anything; the enforcer (``podnet.agent.policy``) asks it for a
snapshot after every change it reports and renders the table from that.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podnet.policy.resolve import PodInfo

log = logging.getLogger("podnet.agent")


@dataclass(frozen=True)
class Snapshot:
    policies: list[dict[str, Any]]  # NetworkPolicy objects as dicts (parsed by the enforcer)
    pods: list[PodInfo]
    namespaces: dict[str, dict[str, str]]  # name -> labels
    covered: dict[str, int] = field(default_factory=dict)  # what the snapshot includes, per kind


class PolicySource(Protocol):
    kind: str

    def start(self, on_change: Callable[[], None]) -> None: ...

    def wait_synced(self, timeout: float) -> bool: ...

    def snapshot(self) -> Snapshot: ...

    def publish(self, node: str, pods: Sequence[PodInfo]) -> bool:
        """This node's pods, for the peers' selectors (etcd only; the API server has them);
        False: not published now (the caller tries again)."""
        ...

    def stop(self) -> None: ...


# ---- Kubernetes ---------------------------------------------------------------------------------


def pod_info(obj: Any) -> PodInfo | None:
    """A Pod object (lightkube's, or its dict) as the resolver sees it; None: host network."""
    raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    meta, spec, status = raw.get("metadata") or {}, raw.get("spec") or {}, raw.get("status") or {}
    if spec.get("hostNetwork"):
        return None
    ports = tuple(
        (str(p["name"]), str(p.get("protocol") or "TCP"), int(p["containerPort"]))
        for c in spec.get("containers") or []
        for p in c.get("ports") or []
        if p.get("name") and p.get("containerPort")
    )
    entries = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    return PodInfo(
        namespace,
        name,
        dict(meta.get("labels") or {}),
        _ips(e.get("ip") for e in entries),
        ports,
        spec.get("nodeName"),
    )


def _ips(raw: Any) -> tuple[Any, ...]:
    out = []
    for text in raw:
        try:
            out.append(ipaddress.ip_address(str(text)))
        except ValueError:
            continue
    return tuple(out)


def _version(watcher: Any) -> int:
    try:
        return int(watcher.version or 0)
    except ValueError:
        return 0


class KubePolicySource:
    kind = "kubernetes"
    KINDS = ("networkpolicies", "pods", "namespaces")

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._watchers: list[Any] = []

    def start(self, on_change: Callable[[], None]) -> None:
        from lightkube.resources.core_v1 import Namespace, Pod
        from lightkube.resources.networking_v1 import NetworkPolicy

        from podnet.kube.watch import ResourceWatcher

        for resource in (NetworkPolicy, Pod, Namespace):
            watcher = ResourceWatcher(self._connect, resource, lambda _e: on_change())
            self._watchers.append(watcher.start())

    def wait_synced(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        return all(w.wait_synced(max(deadline - time.monotonic(), 0.1)) for w in self._watchers)

    def snapshot(self) -> Snapshot:
        # the resourceVersion each watch had reached: the snapshots below include at least that
        covered = {kind: _version(w) for kind, w in zip(self.KINDS, self._watchers, strict=True)}
        policies = [o.to_dict() for o in self._watchers[0].snapshot().values()]
        pods = [p for p in (pod_info(o) for o in self._watchers[1].snapshot().values()) if p is not None]
        namespaces = {
            str(o.metadata.name): dict(o.metadata.labels or {}) for o in self._watchers[2].snapshot().values()
        }
        return Snapshot(policies, pods, namespaces, covered)

    def publish(self, node: str, pods: Sequence[PodInfo]) -> bool:
        return True  # kubelet reports Pods to the API server

    def stop(self) -> None:
        for w in self._watchers:
            w.stop()


# ---- etcd -----------------------------------------------------------------------------------------


def endpoints_document(pods: Sequence[PodInfo]) -> str:
    """The value of ``/podnet/v1/endpoints/<node>`` (pure, stable order)."""
    rows = [
        {
            "namespace": p.namespace,
            "name": p.name,
            "labels": dict(sorted(p.labels.items())),
            "ips": [str(ip) for ip in p.ips],
        }
        for p in sorted(pods, key=lambda p: p.key)
    ]
    return json.dumps({"pods": rows}, sort_keys=True)


def pods_of_document(node: str, text: bytes | str) -> list[PodInfo]:
    """The pods of one node's endpoints document; a malformed one counts as none (and is logged)."""
    try:
        rows = json.loads(text).get("pods") or []
        return [
            PodInfo(
                str(r["namespace"]),
                str(r["name"]),
                {str(k): str(v) for k, v in (r.get("labels") or {}).items()},
                _ips(r.get("ips") or []),
                (),
                node,
            )
            for r in rows
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning(
            "network policy: the endpoints of node %s are unreadable (%s); its pods select nothing", node, exc
        )
        return []


class EtcdPolicySource:
    kind = "etcd"

    def __init__(self, store: Any) -> None:
        self._store = store.clone()  # its own sessions: the agent's threads do not share one
        self._watchers: list[Any] = []
        self._revision = 0
        self._lock = threading.Lock()
        self._published: str | None = None

    def start(self, on_change: Callable[[], None]) -> None:
        from podnet.store import keys
        from podnet.store.watch import PrefixWatcher

        def event(e: Any) -> None:
            with self._lock:
                self._revision = max(self._revision, e.revision)
            on_change()

        for prefix in (keys.POLICY_PREFIX, keys.ENDPOINTS_PREFIX):
            self._watchers.append(PrefixWatcher(self._store, prefix, event).start())

    def wait_synced(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        return all(w.wait_synced(max(deadline - time.monotonic(), 0.1)) for w in self._watchers)

    def snapshot(self) -> Snapshot:
        from podnet.store import keys

        with self._lock:
            covered = {"etcd": self._revision}
        policies, namespaces = [], {}
        for kv in self._watchers[0].snapshot().values():
            try:
                doc = json.loads(kv.value)
            except ValueError:
                log.warning("network policy: %s is no JSON; left out", kv.key)
                continue
            if kv.key.startswith(keys.NETPOL_PREFIX):
                policies.append(doc)
            elif kv.key.startswith(keys.NAMESPACE_LABELS_PREFIX):
                labels = doc.get("labels") if isinstance(doc, dict) else None
                namespaces[kv.key[len(keys.NAMESPACE_LABELS_PREFIX) :]] = {
                    str(k): str(v) for k, v in (labels or {}).items()
                }
        pods = [
            p
            for kv in self._watchers[1].snapshot().values()
            for p in pods_of_document(kv.key[len(keys.ENDPOINTS_PREFIX) :], kv.value)
        ]
        return Snapshot(policies, pods, namespaces, covered)

    def publish(self, node: str, pods: Sequence[PodInfo]) -> bool:
        from podnet.store import keys

        doc = endpoints_document(pods)
        if doc == self._published:
            return True
        try:
            self._store.put(keys.endpoints_key(node), doc)
        except Exception as exc:  # etcd away: the next sync tries again
            log.warning("network policy: cannot publish node %s's pods to etcd (%s); retrying", node, exc)
            self._published = None
            return False
        self._published = doc
        return True

    def stop(self) -> None:
        for w in self._watchers:
            w.stop()
        self._store.close()
