"""A thin typed wrapper over etcd3gw (etcd's /v3 grpc-gateway): KV, transactions, leases.

Values are bytes in etcd; callers here pass ``str``/``bytes`` and get ``KV`` records with the
revisions needed for compare-and-swap. Every etcd failure becomes a ``StoreError`` that names the
endpoints. One ``Store`` is one HTTP session per endpoint: give each thread its own
(``Store.clone()``).

Several endpoints (an etcd cluster) fail over: a request that cannot reach the active member
(connection refused, timeout, "no leader" 503) is tried on the next one, each once; the member
that answered stays active. ``health`` keeps the time of the last answer and the last error, so
status shows a real probe instead of "a client object exists". ``Backoff`` and ``OutageLog``
let retry loops wait longer while the store stays down and log state changes, not every retry.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_exc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0


class StoreError(RuntimeError):
    """etcd could not be reached or refused a request; the message names the endpoint."""


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0

    def text(self) -> str:
        return self.value.decode()


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: tuple[dict[str, Any], ...]


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


def _kv_from_json(item: dict[str, Any]) -> KV:
    return KV(
        key=base64.b64decode(item["key"]).decode(),
        value=base64.b64decode(item.get("value", "")),
        create_revision=int(item.get("create_revision", 0)),
        mod_revision=int(item.get("mod_revision", 0)),
        lease=int(item.get("lease", 0)),
    )


# Transaction building blocks, in the grpc-gateway JSON form of etcd's TxnRequest.
def cmp_absent(key: str) -> dict[str, Any]:
    """Compare: ``key`` does not exist (its create_revision is 0)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def cmp_mod_revision(key: str, mod_revision: int) -> dict[str, Any]:
    """Compare: ``key`` was last modified at ``mod_revision`` (0 means: absent)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def op_put(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


@dataclass(frozen=True)
class TlsFiles:
    """Mutual TLS to etcd: the CA that signed the members' certificates, and this client's
    certificate and key (Cilium's etcd config: trusted-ca-file, cert-file, key-file)."""

    ca: str
    cert: str
    key: str

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def http_session(tls: TlsFiles | None) -> requests.Session:
    """An HTTP session for etcd that ignores the environment's proxies and CA bundles
    (``REQUESTS_CA_BUNDLE`` would otherwise win over the store's own CA) and presents the
    client certificate when there is one."""
    session = requests.Session()
    session.trust_env = False
    if tls is not None:
        session.verify = tls.ca
        session.cert = (tls.cert, tls.key)
    return session


@dataclass
class Health:
    """What the last requests of one ``Store`` said about etcd."""

    last_success: float = 0.0  # unix seconds of the last answer
    last_error: str = ""
    failing_since: float = 0.0  # unix seconds of the first failure since the last success; 0: ok

    @property
    def ok(self) -> bool:
        return self.failing_since == 0.0 and self.last_success > 0


_UNREACHABLE = (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError)


def parse_endpoints(endpoints: Sequence[str] | str) -> tuple[str, ...]:
    """``http://IP:PORT`` endpoints from a list and/or comma-separated text; StoreError if bad."""
    eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    found = tuple(e.strip() for ep in eps for e in ep.split(",") if e.strip())
    if not found:
        raise StoreError("no etcd endpoint given: pass --etcd-endpoints http://IP:2379")
    for endpoint in found:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"invalid etcd endpoint {endpoint!r}: write it as http://IP:PORT")
    return found


class Backoff:
    """Waits that double from ``first`` up to ``cap`` while failures go on; ``reset()`` on success."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class OutageLog:
    """Logs an outage as state changes: the first failure, a reminder every ``remind`` seconds,
    and the recovery with its length; never every retry."""

    def __init__(self, logger: logging.Logger, what: str, remind: float = 60.0) -> None:
        self._log, self.what, self.remind = logger, what, remind
        self.since = 0.0
        self._said = 0.0

    def failed(self, error: object) -> None:
        now = time.monotonic()
        if not self.since:
            self.since = self._said = now
            self._log.warning("%s failed: %s; retrying with back-off", self.what, error)
        elif now - self._said >= self.remind:
            self._said = now
            self._log.warning("%s still failing after %.0fs: %s", self.what, now - self.since, error)

    def recovered(self) -> None:
        if self.since:
            self._log.info("%s works again after %.1fs", self.what, time.monotonic() - self.since)
            self.since = 0.0


class Store:
    """KV, transactions and leases on etcd; ``endpoints`` are the members of one cluster."""

    def __init__(
        self, endpoints: Sequence[str] | str, timeout: float = DEFAULT_TIMEOUT, tls: TlsFiles | None = None
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        self.tls = tls
        if tls is None and any(e.startswith("https://") for e in self.endpoints):
            raise StoreError("https etcd endpoints need etcd.trustedCAFile, etcd.certFile and etcd.keyFile")
        self.health = Health()
        self._active = 0
        self._clients: dict[int, Any] = {}

    def _client_for(self, index: int) -> Any:
        client = self._clients.get(index)
        if client is None:
            parts = urlsplit(self.endpoints[index])
            client = etcd3gw.client(
                host=parts.hostname, port=parts.port or 2379, protocol=parts.scheme,
                timeout=self.timeout, api_path="/v3/", session=http_session(self.tls),
            )  # fmt: skip
            self._clients[index] = client
        return client

    @property
    def endpoint(self) -> str:
        """The member requests go to now."""
        return self.endpoints[self._active]

    @property
    def _client(self) -> Any:
        return self._client_for(self._active)

    def clone(self) -> Store:
        """A new ``Store`` (own HTTP sessions) on the same endpoints, for another thread; it starts
        on the member this one found working."""
        other = Store(self.endpoints, self.timeout, self.tls)
        other._active = self._active
        return other

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def close(self) -> None:
        for client in self._clients.values():
            client.session.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the active member; on "unreachable", to each other member once (failover)."""
        failures: list[str] = []
        for step in range(len(self.endpoints)):
            index = (self._active + step) % len(self.endpoints)
            client = self._client_for(index)
            try:
                result: dict[str, Any] = client.post(client.get_url(path), json=body)
            except etcd_exc.Etcd3Exception as exc:
                detail = f"{type(exc).__name__} {getattr(exc, 'detail_text', '') or exc}".strip()
                failures.append(f"{self.endpoints[index]}: {detail}")
                if isinstance(exc, _UNREACHABLE):
                    continue
                self._failed(failures)  # etcd answered with an error: no point asking another member
                raise StoreError(f"etcd at {self.endpoints[index]}: {what} failed: {detail}") from exc
            if index != self._active:
                log.info("etcd: %s did not answer; now using %s", self.endpoint, self.endpoints[index])
                self._active = index
            self.health.last_success, self.health.failing_since = time.time(), 0.0
            return result
        self._failed(failures)
        raise StoreError(
            f"etcd: {what} failed on every endpoint ({'; '.join(failures)}); check that etcd is running "
            "and that etcd.endpoints lists its members"
        )

    def _failed(self, failures: list[str]) -> None:
        self.health.last_error = "; ".join(failures)
        if not self.health.failing_since:
            self.health.failing_since = time.time()

    def status(self) -> dict[str, Any]:
        """The active member's ``maintenance/status``: version, leader, raft index (a real probe)."""
        return self._post("status", "/maintenance/status", {})

    # --- KV -------------------------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        result = self._post(f"get {key}", "/kv/range", {"key": _b64(key)})
        kvs = result.get("kvs", [])
        return _kv_from_json(kvs[0]) if kvs else None

    def list_prefix(self, prefix: str, revision: int = 0) -> tuple[list[KV], int]:
        """All keys under ``prefix`` (sorted by key) and the store revision they were read at.

        Pass the ``revision`` of an earlier list to read several prefixes as one consistent snapshot.
        """
        body: dict[str, Any] = {
            "key": _b64(prefix),
            "range_end": _prefix_end(prefix),
            "sort_order": 1,
            "sort_target": 0,
        }
        if revision:
            body["revision"] = str(revision)
        result = self._post(f"list {prefix}", "/kv/range", body)
        read_at = revision or int(result.get("header", {}).get("revision", 0))
        return [_kv_from_json(i) for i in result.get("kvs", [])], read_at

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Write ``key``; returns the new store revision."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        result = self._post(f"put {key}", "/kv/put", body)
        return int(result.get("header", {}).get("revision", 0))

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. Deleting an absent key is not an error."""
        result = self._post(f"delete {key}", "/kv/deleterange", {"key": _b64(key)})
        return int(result.get("deleted", 0)) > 0

    # --- transactions -----------------------------------------------------------------------
    def txn(
        self,
        compare: Sequence[dict[str, Any]],
        success: Sequence[dict[str, Any]],
        failure: Sequence[dict[str, Any]] = (),
    ) -> TxnResult:
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        result = self._post("transaction", "/kv/txn", body)
        return TxnResult(
            succeeded=bool(result.get("succeeded", False)),
            revision=int(result.get("header", {}).get("revision", 0)),
            responses=tuple(result.get("responses", [])),
        )

    def create(self, key: str, value: str | bytes, lease: int = 0) -> bool:
        """Put ``key`` only if it is absent; False if someone else has it."""
        return self.txn([cmp_absent(key)], [op_put(key, value, lease)]).succeeded

    def update(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> bool:
        """Put ``key`` only if it is still at ``mod_revision`` (compare-and-swap)."""
        return self.txn([cmp_mod_revision(key, mod_revision)], [op_put(key, value, lease)]).succeeded

    def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` only if it is still at ``mod_revision``."""
        return self.txn([cmp_mod_revision(key, mod_revision)], [op_delete(key)]).succeeded

    # --- leases -----------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its ID."""
        result = self._post(f"grant lease ttl={ttl}", "/lease/grant", {"TTL": str(ttl), "ID": "0"})
        return int(result["ID"])

    def keepalive_once(self, lease: int) -> int:
        """Refresh ``lease``; returns its new TTL, or -1 when it has already expired."""
        result = self._post(f"keepalive lease {lease:x}", "/lease/keepalive", {"ID": str(lease)})
        return int(result.get("result", {}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        """Revoke ``lease`` (its keys go); revoking an expired lease is not an error."""
        try:
            self._post(f"revoke lease {lease:x}", "/kv/lease/revoke", {"ID": str(lease)})
        except StoreError as exc:
            if "not found" not in str(exc):
                raise


class LeaseKeeper:
    """Holds a lease alive from a background thread; re-grants it if it was lost.

    ``on_granted(lease_id)`` runs after every grant (the first one included, in the caller's
    thread), so keys that must live on the lease are written again after a loss (etcd down longer
    than the TTL). ``close()`` stops the thread and, by default, revokes the lease.
    """

    def __init__(
        self,
        store: Store,
        ttl: int,
        on_granted: Callable[[int], None] | None = None,
        interval: float | None = None,
    ) -> None:
        if ttl < 2:
            raise ValueError(f"lease TTL {ttl}s is too short: use at least 2 seconds")
        self._store = store.clone()
        self.ttl = ttl
        self._on_granted = on_granted
        self._interval = interval if interval is not None else max(ttl / 3.0, 0.5)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.lease_id = self._grant()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.lease_id:x}", daemon=True)
        self._thread.start()

    def _grant(self) -> int:
        lease = self._store.grant(self.ttl)
        if self._on_granted is not None:
            self._on_granted(lease)
        return lease

    def _run(self) -> None:
        outage = OutageLog(log, f"keepalive of lease {self.lease_id:x}")
        backoff = Backoff(first=min(0.5, self._interval), cap=self._interval)
        wait = self._interval
        while not self._stop.wait(wait):
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    if self._store.keepalive_once(self.lease_id) <= 0:
                        log.warning("lease %x expired; granting a new one", self.lease_id)
                        self.lease_id = self._grant()
                outage.recovered()
                backoff.reset()
                wait = self._interval
            except Exception as exc:  # keep trying: etcd may be restarting
                outage.failed(exc)
                wait = backoff.next()

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=self._store.timeout + 1)
        with self._lock:
            if revoke:
                try:
                    self._store.revoke(self.lease_id)
                except StoreError as exc:
                    log.warning("could not revoke lease %x: %s", self.lease_id, exc)
            self._store.close()
