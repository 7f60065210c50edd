"""What the agent reports: the node report to the datastore (alive, with how many pods) and the
store probe behind status's KVStore line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from podnet.agent.round import RoundPlan
from podnet.model import NodeInfo
from podnet.statusdoc.datastore import ETCD, StoreHealth
from podnet.store.client import Backoff, OutageLog, Store, StoreError
from podnet.store.datastore import Datastore, DatastoreError

log = logging.getLogger("podnet.agent")

HEARTBEAT_INTERVAL = 30.0  # how often the agent tells the operator it is alive (below its grace period)
PROBE_INTERVAL = 5.0  # how often the store is probed for status while it answers
PROBE_KEY = "/podnet/v1/ping"


class NodeReport:
    """Tells the operator that this node's agent is alive and how many pod endpoints it serves
    (``/podnet/v1/nodestate/<node>``): written when the count changes and every
    ``HEARTBEAT_INTERVAL`` seconds. The operator never reclaims the pod CIDRs of a node that
    reported recently, and fences those of a gone node that last reported endpoints."""

    name = "nodeReport"

    def __init__(self, datastore: Datastore, node_name: str, endpoints: Callable[[], int]) -> None:
        self._datastore = datastore
        self._node = node_name
        self._endpoints = endpoints
        self.reported: tuple[float, int] | None = None
        self.error = ""

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        count, now = self._endpoints(), time.time()
        if (
            self.reported is not None
            and self.reported[1] == count
            and now - self.reported[0] < HEARTBEAT_INTERVAL
        ):
            return []
        try:
            self._datastore.report(self._node, count, now)
        except DatastoreError as exc:
            if not self.error:
                log.warning("cannot report this node's state to the store: %s", exc)
            self.error = str(exc)
            return []  # the store's own status says it is down; the datapath does not depend on this
        if self.error:
            log.info("node state reported again")
        self.reported, self.error = (now, count), ""
        return []

    def status(self) -> dict[str, Any]:
        when, count = self.reported or (0.0, 0)
        return {"reported": when, "endpoints": count, "error": self.error or None}

    def stop(self) -> None:
        return None


class StoreProbe:
    """A real probe of the store for status: etcd's ``maintenance/status`` every
    ``PROBE_INTERVAL`` seconds (longer, with back-off, while it fails), with the time of the last
    success; outages are logged as state changes."""

    name = "kvstore"

    def __init__(self, store: Store) -> None:
        self._store = store.clone()
        self._outage = OutageLog(log, "etcd probe")
        self.version = ""
        self.leader = 0

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        self.probe()
        threading.Thread(target=self._loop, args=(stop,), name="kvstore-probe", daemon=True).start()

    def probe(self) -> bool:
        """A linearizable read (it needs a quorum, as every write does), then the member's status
        for the version; ``maintenance/status`` alone is answered by a member without quorum."""
        try:
            self._store.get(PROBE_KEY)
            answer = self._store.status()
        except StoreError as exc:
            self._outage.failed(exc)
            return False
        self._outage.recovered()
        self.version = str(answer.get("version", ""))
        self.leader = int(answer.get("leader", 0) or 0)
        return True

    def _loop(self, stop: threading.Event) -> None:
        backoff = Backoff(first=PROBE_INTERVAL, cap=4 * PROBE_INTERVAL)
        while not stop.wait(PROBE_INTERVAL if self._store.health.ok else backoff.next()):
            if self.probe():
                backoff.reset()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        health = self._store.health
        return StoreHealth(
            kind=ETCD,
            state="ok" if health.ok else "unreachable",
            version=self.version or None,
            last_success=health.last_success,
            failing_since=health.failing_since or None,
            error=health.last_error if not health.ok else None,
            endpoints=tuple(self._store.endpoints),
            active=self._store.endpoint,
            tls=self._store.tls is not None,
        ).to_json()

    def stop(self) -> None:
        self._store.close()
