"""The agent's view of its own PodnetNode's IPAM fields (and of the PodnetIPPools), for the IPAM
modes whose addresses change while the agent runs (a pool someone fills, CIDRs per named pool).

Design fact: the agent writes only its own IPAM fields, each in a way that cannot clobber anyone
else's: ``status.ipam.used`` by a merge patch naming the keys it adds and removes, and
``spec.ipam.pools.requested`` by server-side apply under its own field manager
(``podnet-agent-ipam``; the node's other agent fields are applied by ``podnet-agent``, and one
manager's apply drops the fields it leaves out). ``spec.ipam.pool`` (crd) and
``spec.ipam.pools.allocated`` (the mode's operator) are only read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from podnet.kube.resources import PodnetIPPool, PodnetNode
from podnet.kube.watch import KubeEvent, ResourceWatcher

log = logging.getLogger(__name__)

IPAM_MANAGER = "podnet-agent-ipam"


class NodeIpamView:
    """Watches one PodnetNode (and, with ``pools``, every PodnetIPPool); ``on_change`` runs on the
    watch threads after each event."""

    def __init__(
        self, make_client: Callable[[], Client], node: str, on_change: Callable[[], None], pools: bool = False
    ) -> None:
        self.node = node
        self._client = make_client()
        self._on_change = on_change
        self._lock = threading.Lock()
        self._obj: Any = None
        self._pools: dict[str, Any] = {}
        self._watchers = [
            ResourceWatcher(make_client, PodnetNode, self._on_node, fields={"metadata.name": node})
        ]
        if pools:
            self._watchers.append(ResourceWatcher(make_client, PodnetIPPool, self._on_pool))

    def start(self) -> NodeIpamView:
        for watcher in self._watchers:
            watcher.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return all(w.wait_synced(timeout) for w in self._watchers)

    def stop(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        self._client.close()

    def _on_node(self, event: KubeEvent) -> None:
        if event.name != self.node:
            return
        with self._lock:
            self._obj = None if event.type == "DELETED" else event.obj
        self._on_change()

    def _on_pool(self, event: KubeEvent) -> None:
        with self._lock:
            if event.type == "DELETED":
                self._pools.pop(event.name, None)
            else:
                self._pools[event.name] = event.obj
        self._on_change()

    # ---- reading -----------------------------------------------------------------------------

    def spec_ipam(self) -> dict[str, Any]:
        with self._lock:
            return dict(((self._obj.spec or {}).get("ipam") or {}) if self._obj is not None else {})

    def status_ipam(self) -> dict[str, Any]:
        with self._lock:
            return dict(((self._obj.status or {}).get("ipam") or {}) if self._obj is not None else {})

    def pools(self) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
        """Every PodnetIPPool as (name, spec, status), oldest first (an overlap refuses the later)."""
        with self._lock:
            objs = list(self._pools.values())
        objs.sort(key=lambda o: (str(o.metadata.creationTimestamp or ""), str(o.metadata.name)))
        return [(str(o.metadata.name), o.spec or {}, o.status or {}) for o in objs]

    # ---- writing (raise on failure; the callers retry) ----------------------------------------

    def write_used(self, used: Mapping[str, str], before: Mapping[str, Any]) -> None:
        """``status.ipam.used`` = ``used`` (address -> owner), removing the keys of ``before`` that
        are gone."""
        entries: dict[str, Any] = {ip: {"owner": owner} for ip, owner in used.items()}
        entries.update({ip: None for ip in before if ip not in used})
        body = {"status": {"ipam": {"used": entries}}}
        self._client.patch(PodnetNode.Status, self.node, body, patch_type=PatchType.MERGE)

    def write_requested(self, requested: Sequence[Mapping[str, Any]]) -> None:
        """``spec.ipam.pools.requested`` (server-side apply, the agent's IPAM field manager)."""
        obj = PodnetNode(
            metadata=ObjectMeta(name=self.node), spec={"ipam": {"pools": {"requested": list(requested)}}}
        )
        self._client.apply(obj, field_manager=IPAM_MANAGER, force=True)
