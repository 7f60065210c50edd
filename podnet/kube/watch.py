"""A list-then-watch loop over one kind of Kubernetes object, the way client-go's reflector works.

Design fact: a watch resumes from the last resourceVersion it saw when its stream ends (the API
server closes watches after a while; the API server restarts; the network drops), and when that
version is too old (410 Gone: etcd compacted it) it lists again and reports the difference from
what it knew, deletions included. lightkube's own 410 handling restarts the watch without a
list, which never reports an object deleted meanwhile; this loop does not rely on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube import Client
from lightkube.core.exceptions import ApiError

from podnet.store.client import Backoff

log = logging.getLogger(__name__)

SERVER_TIMEOUT = 60  # seconds the API server keeps one watch request open
GONE = 410


@dataclass(frozen=True)
class KubeEvent:
    type: str  # ADDED, MODIFIED, DELETED
    name: str  # namespace/name for namespaced objects
    obj: Any


def _namespaced(resource: Any) -> bool:
    from lightkube.core.resource import NamespacedResource

    return isinstance(resource, type) and issubclass(resource, NamespacedResource)


def key_of(obj: Any) -> str:
    meta = obj.metadata
    return f"{meta.namespace}/{meta.name}" if meta.namespace else str(meta.name)


class ResourceWatcher:
    """Keeps ``snapshot()`` equal to the API server's objects of ``resource`` and calls
    ``on_event`` for every change, from one thread. ``relists`` counts lists after a 410 (and
    the first), ``resumes`` watches restarted from a known version."""

    def __init__(
        self,
        connect: Callable[[], Client],
        resource: Any,
        on_event: Callable[[KubeEvent], None],
        server_timeout: int = SERVER_TIMEOUT,
        known: Mapping[str, Any] | None = None,
        version: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        """``known`` and ``version``: what an earlier watcher had seen (e.g. its ``snapshot()`` and
        ``version``); the watch starts from there, and a 410 reports the difference to it.
        ``fields``: a field selector (``{"metadata.name": node}``: one object only)."""
        self._fields = dict(fields) if fields else None
        # a namespaced kind (Pod, NetworkPolicy) is watched in every namespace
        self._namespace = {"namespace": "*"} if _namespaced(resource) else {}
        self._connect = connect
        self._resource = resource
        self._on_event = on_event
        self._server_timeout = server_timeout
        self._known: dict[str, Any] = dict(known or {})
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._client: Client | None = None
        self._thread = threading.Thread(target=self._run, name=f"kube-watch-{resource.__name__}", daemon=True)
        self.version: str | None = version
        self.relists = 0
        self.resumes = 0
        self.last_error = ""

    def start(self) -> ResourceWatcher:
        self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._known)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()  # ends a blocked stream read
        self._thread.join(timeout)

    # ---- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                self._client = self._connect()
                if self.version is None:
                    self._relist()
                elif not self._synced.is_set():
                    self._synced.set()  # resuming what an earlier watcher had
                else:
                    self.resumes += 1  # from the last version seen: nothing is listed again
                self._watch()
                backoff.reset()
            except ApiError as exc:
                if exc.status.code == GONE:
                    log.info("watch of %s: version %s is too old; listing again", self._name, self.version)
                    self.version = None  # the next turn lists
                    continue
                self._failed(exc, backoff)
            except (httpx.HTTPError, OSError) as exc:
                self._failed(exc, backoff)
            finally:
                if self._client is not None:
                    self._client.close()
                    self._client = None

    @property
    def _name(self) -> str:
        return str(self._resource.__name__)

    def _failed(self, exc: Exception, backoff: Backoff) -> None:
        if self._stop.is_set():
            return
        self.last_error = str(exc)
        delay = backoff.next()
        log.warning(
            "watch of %s failed (%s); again in %.1fs from version %s", self._name, exc, delay, self.version
        )
        self._stop.wait(delay)

    def _relist(self) -> None:
        assert self._client is not None
        listed = self._client.list(self._resource, fields=self._fields, **self._namespace)
        items = {key_of(obj): obj for obj in listed}
        version = listed.resourceVersion
        with self._lock:
            before, self._known = self._known, items
        self.relists += 1
        for key, obj in items.items():
            if key not in before:
                self._emit(KubeEvent("ADDED", key, obj))
            elif before[key].metadata.resourceVersion != obj.metadata.resourceVersion:
                self._emit(KubeEvent("MODIFIED", key, obj))
        for key, obj in before.items():
            if key not in items:
                self._emit(KubeEvent("DELETED", key, obj))
        self.version = version
        self._synced.set()

    def _watch(self) -> None:
        assert self._client is not None
        stream = self._client.watch(
            self._resource,
            resource_version=self.version,
            server_timeout=self._server_timeout,
            fields=self._fields,
            **self._namespace,
        )
        for kind, obj in stream:
            if self._stop.is_set():
                return
            key = key_of(obj)
            with self._lock:
                if kind == "DELETED":
                    self._known.pop(key, None)
                else:
                    self._known[key] = obj
            self.version = obj.metadata.resourceVersion
            self._emit(KubeEvent(kind, key, obj))

    def _emit(self, event: KubeEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a handler's bug never ends the watch
            log.exception("handling %s %s of %s failed", event.type, event.name, self._name)
