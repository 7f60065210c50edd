"""Watch a key prefix from a background thread that survives etcd restarts and compaction.

Each (re)connect lists the prefix, emits the difference against what the watcher last knew as
put/delete events, then streams the /v3/watch endpoint from the listed revision + 1. A consumer
therefore sees a consistent event stream whatever happened in between (the list+watch pattern
of Kubernetes informers). ``stop()`` shuts the stream's socket down and joins the thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

import requests

from podnet.store.client import KV, Backoff, OutageLog, Store, _b64, _kv_from_json, _prefix_end, http_session

log = logging.getLogger(__name__)

READ_TIMEOUT = 30.0  # an idle stream is re-opened after this long (cheap: list + watch)
MAX_RETRY = 5.0  # the longest wait between reconnects while etcd stays unreachable


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # empty for deletes
    revision: int


class PrefixWatcher:
    """Calls ``on_event`` for every change under ``prefix``, starting with the current content."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        on_event: Callable[[WatchEvent], None],
        retry_interval: float = 0.5,
        on_synced: Callable[[], None] | None = None,
    ) -> None:
        self._store = store.clone()
        self.prefix = prefix
        self._on_event = on_event
        self._on_synced = on_synced
        self._retry = retry_interval
        self._known: dict[str, KV] = {}
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._resp: requests.Response | None = None
        self._resp_lock = threading.Lock()
        self._session = http_session(store.tls)  # mutual TLS, no proxies, as the store's own
        self._thread = threading.Thread(target=self._run, name=f"watch {prefix}", daemon=True)

    def start(self) -> PrefixWatcher:
        self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        """True once the first listing has been delivered to ``on_event``."""
        return self._synced.wait(timeout)

    def snapshot(self) -> dict[str, KV]:
        return dict(self._known)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._shutdown_stream()
        self._thread.join(timeout)
        self._session.close()
        self._store.close()

    def __enter__(self) -> PrefixWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        outage = OutageLog(log, f"watch {self.prefix}")
        backoff = Backoff(first=self._retry, cap=MAX_RETRY)
        while not self._stop.is_set():
            try:
                revision = self._resync()
            except Exception as exc:
                outage.failed(exc)
                self._stop.wait(backoff.next())
                continue
            outage.recovered()
            backoff.reset()
            try:
                self._stream(revision + 1)
            except Exception as exc:
                if self._stop.is_set():
                    break
                # an idle stream is re-opened on purpose (read timeout); the next resync tells an
                # outage from that, with back-off
                if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                    log.debug("watch %s: idle stream re-opened (%s)", self.prefix, exc)
                    continue
                outage.failed(exc)
                self._stop.wait(backoff.next())

    def _emit(self, event: WatchEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("watch %s: handler failed on %s %s", self.prefix, event.kind, event.key)

    def _resync(self) -> int:
        kvs, revision = self._store.list_prefix(self.prefix)
        current = {kv.key: kv for kv in kvs}
        for key in sorted(set(self._known) - set(current)):
            del self._known[key]
            self._emit(WatchEvent("delete", key, b"", revision))
        for key, kv in current.items():
            old = self._known.get(key)
            if old is None or old.mod_revision != kv.mod_revision:
                self._known[key] = kv
                self._emit(WatchEvent("put", key, kv.value, kv.mod_revision))
        if not self._synced.is_set():
            self._synced.set()
            if self._on_synced is not None:
                self._on_synced()
        return revision

    def _stream(self, start_revision: int) -> None:
        body = {
            "create_request": {
                "key": _b64(self.prefix),
                "range_end": _prefix_end(self.prefix),
                "start_revision": str(start_revision),
            }
        }
        resp = self._session.post(
            f"{self._store.base_url}/v3/watch",
            json=body,
            stream=True,
            timeout=(self._store.timeout, READ_TIMEOUT),
        )
        with self._resp_lock:
            self._resp = resp
        if self._stop.is_set():
            self._shutdown_stream()
            return
        try:
            resp.raise_for_status()
            for line in resp.iter_lines(chunk_size=None):
                if self._stop.is_set():
                    return
                if line.strip():
                    self._handle(json.loads(line))
        finally:
            with self._resp_lock:
                self._resp = None
            resp.close()

    def _handle(self, message: dict[str, Any]) -> None:
        if "error" in message:
            raise RuntimeError(f"etcd watch error: {message['error']}")
        result = message.get("result", {})
        if result.get("canceled"):
            raise RuntimeError(
                f"etcd cancelled the watch (compact revision {result.get('compact_revision', '?')})"
            )
        for raw in result.get("events", []):
            kv = _kv_from_json(raw["kv"])
            if raw.get("type") == "DELETE":
                self._known.pop(kv.key, None)
                self._emit(WatchEvent("delete", kv.key, b"", kv.mod_revision))
            else:
                self._known[kv.key] = kv
                self._emit(WatchEvent("put", kv.key, kv.value, kv.mod_revision))

    def _shutdown_stream(self) -> None:
        with self._resp_lock:
            resp = self._resp
        if resp is None:
            return
        with contextlib.suppress(Exception):
            fd = resp.raw._fp.fileno()  # type: ignore[union-attr]
            dup = socket.socket(fileno=socket.dup(fd))
            dup.shutdown(socket.SHUT_RDWR)
            dup.close()


class PrefixCache:
    """The current values under a prefix, kept up to date by one ``PrefixWatcher``; calls
    ``on_change`` after every event (from the watch thread). Readers get copies."""

    def __init__(self, store: Store, prefix: str, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._values: dict[str, bytes] = {}
        self._watcher = PrefixWatcher(store, prefix, self._on_event)

    def start(self) -> Self:
        self._watcher.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._watcher.wait_synced(timeout)

    def stop(self) -> None:
        self._watcher.stop()

    def _on_event(self, event: WatchEvent) -> None:
        with self._lock:
            if event.kind == "delete":
                self._values.pop(event.key, None)
            else:
                self._values[event.key] = event.value
        self._on_change()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._values.get(key)

    def items(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return sorted(self._values.items())
