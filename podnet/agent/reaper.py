"""The endpoint reaper: pods whose network namespace is gone lose their endpoint, addresses and
rules, at an interval (``endpointGCInterval``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from podnet.agent.round import RoundPlan
from podnet.model import Endpoint, NodeInfo

log = logging.getLogger("podnet.agent")


class EndpointSweeper(Protocol):
    """The CNI handler's view of attachments whose pod namespace is gone (``CniHandler``)."""

    def stale(self) -> list[Endpoint]: ...

    def reap_stale(self) -> list[Endpoint]: ...

    def records(self) -> list[Endpoint]: ...


class EndpointReaper:
    """Frees the attachments of pods whose namespace is gone without a CNI DEL (containerd's
    ``ctr run --cni`` after kill and rm, a runtime that crashed): every ``endpointGCInterval``
    (Cilium's setting; 0 turns it off) their addresses, guard entries and records go. A pod's
    namespace going away takes the veth with it, so "node-side link gone" is the sign, and it
    never needs the namespace's path."""

    name = "endpoints"

    def __init__(self, handler: Callable[[], EndpointSweeper | None], interval: Callable[[], float]) -> None:
        self._handler = handler
        self._interval = interval
        self.reaped = 0
        self.last_reaped: list[str] = []
        self.last_sweep: float | None = None

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        threading.Thread(target=self._loop, args=(stop,), name="podnet-endpoint-gc", daemon=True).start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(min(self._interval() or 5.0, 3600.0)):
            if self._interval() > 0:
                self.sweep()

    def sweep(self) -> list[Endpoint]:
        handler = self._handler()
        if handler is None:
            return []
        try:
            gone = handler.reap_stale()
        except Exception as exc:  # the next sweep tries again
            log.warning("endpoint GC failed: %s", exc)
            return []
        self.last_sweep = time.time()
        for record in gone:
            log.info(
                "endpoint GC: %s/%s (%s) released: its network namespace is gone and no CNI DEL came",
                record.container_id, record.ifname, ", ".join(str(a.ip) for a in record.addresses),
            )  # fmt: skip
        self.reaped += len(gone)
        if gone:
            self.last_reaped = [f"{r.container_id}/{r.ifname}" for r in gone]
        return gone

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        handler = self._handler()
        records = handler.records() if handler is not None else []
        stale = handler.stale() if handler is not None else []
        listed = [
            {"containerID": r.container_id, "ifname": r.ifname, "netns": r.netns,
             "addresses": [str(a) for a in r.addresses]}
            for r in stale
        ]  # fmt: skip
        return {
            "total": len(records),
            "stale": listed,
            "gcInterval": self._interval(),
            "reaped": self.reaped,
            "lastReaped": self.last_reaped,
            "lastSweep": self.last_sweep,
        }

    def stop(self) -> None:
        return None
