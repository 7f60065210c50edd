"""The agent's drop monitor: podnet's drops one by one, and the kernel's by reason.

- **Drop events** (``bpf.events.drop.enabled``, Cilium's setting, on by default): the pod guard
  logs each packet it drops to NFLOG group ``guard.DROP_GROUP`` with the reason as prefix
  (rate-limited per rule); this component reads the group in the node's namespace and keeps the
  last ``MAX_EVENTS`` events (time, reason, interfaces, addresses, ports), which ``podnet drops``
  fetches and follows over the agent API (``op: drops``), as Hubble shows drop reasons.
- **Counters** for ``podnet status``: events per reason since the agent started, the kernel's own
  drop counters of the namespace (``podnet.datapath.kernel.dropstats``: no route, too big with
  DF, discards, reverse-path filter) and the dropped packets of every pod's veth (per endpoint).
  The kernel's counters count since the namespace was made, so next to them ``kernelRecent`` has
  what rose in the last ``RECENT_WINDOW`` seconds (at most since the agent started): a counter
  that rose last week is history, one that rises now is a problem.

Reading costs nothing on the path of accepted packets: only dropped ones are copied (128 bytes).
Turning the setting off removes the log rules (the guard's next apply) and closes the socket.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from podnet import owned
from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath.guard import DROP_GROUP, DROP_PREFIX
from podnet.datapath.kernel import dropstats
from podnet.datapath.kernel.nflog import LoggedPacket, NflogError, NflogSocket
from podnet.model import NodeInfo
from podnet.statusdoc.drops import DropCounters, DropEvent, DropEvents

log = logging.getLogger("podnet.agent")

MAX_EVENTS = 2000
RETRY = 5.0  # seconds between attempts to bind the group after a failure
RECENT_WINDOW = 300.0  # seconds of kernel counter history ``kernelRecent`` covers


def recent_rises(
    samples: Sequence[tuple[float, dict[str, int]]], current: dict[str, int], now: float, window: float
) -> dict[str, int]:
    """What rose in ``current`` since the sample that starts the window (the newest one at least
    ``window`` old, else the oldest kept) (pure)."""
    if not samples:
        return {}
    base = samples[0][1]
    for at, values in samples:
        if at <= now - window:
            base = values
    return {k: v - base.get(k, 0) for k, v in sorted(current.items()) if v > base.get(k, 0)}


def prune(samples: list[tuple[float, dict[str, int]]], now: float, window: float) -> None:
    """Keep one sample older than the window (the baseline), and those inside it (in place)."""
    old = [i for i, (at, _) in enumerate(samples) if at <= now - window]
    if len(old) > 1:
        del samples[: old[-1]]


class DropMonitor:
    name = "drops"

    def __init__(
        self, config: Callable[[], AgentConfig], annotate: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """``annotate``: adds to an event what only another component knows (NetworkPolicy: the
        direction and the policies that isolate the pod)."""
        self._config = config
        self._annotate = annotate
        self._lock = threading.Lock()
        self._events: collections.deque[DropEvent] = collections.deque(maxlen=MAX_EVENTS)
        self._seq = 0
        self._by_reason: collections.Counter[str] = collections.Counter()
        self._samples: list[tuple[float, dict[str, int]]] = []  # the kernel's counters over time
        self.error = ""

    def _sample(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(kernel counters, their rises within the window, link drops), keeping this sample."""
        kernel, links = dropstats.read()
        now = time.monotonic()
        with self._lock:
            self._samples.append((now, kernel))
            prune(self._samples, now, RECENT_WINDOW)
            recent = recent_rises(self._samples, kernel, now, RECENT_WINDOW)
        return kernel, recent, links

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        self._sample()  # the baseline: what rose before the agent started is not recent
        threading.Thread(target=self._loop, args=(stop,), name="drop-monitor", daemon=True).start()

    def _loop(self, stop: threading.Event) -> None:
        sock: NflogSocket | None = None
        try:
            while not stop.is_set():
                if not self._config().drop_events:
                    if sock is not None:
                        sock.close()
                        sock = None
                    stop.wait(1.0)
                    continue
                if sock is None:
                    try:
                        sock = NflogSocket(DROP_GROUP)
                        self.error = ""
                    except NflogError as exc:
                        if self.error != str(exc):
                            log.warning("drop monitor: %s", exc)
                        self.error = str(exc)
                        stop.wait(RETRY)
                        continue
                try:
                    self.record(sock.read(timeout=1.0))
                except OSError as exc:
                    self.error = f"reading NFLOG group {DROP_GROUP}: {exc}"
                    sock.close()
                    sock = None
        finally:
            if sock is not None:
                sock.close()

    def record(self, packets: Sequence[LoggedPacket]) -> None:
        """Keep the guard's logged packets as events (other prefixes are not podnet's)."""
        now = time.time()
        with self._lock:
            for p in packets:
                if not p.prefix.startswith(DROP_PREFIX):
                    continue
                reason = p.prefix[len(DROP_PREFIX) :]
                self._seq += 1
                self._by_reason[reason] += 1
                event = DropEvent(
                    seq=self._seq,
                    time=p.at or now,
                    reason=reason,
                    in_dev=_ifname(p.indev),
                    out_dev=_ifname(p.outdev),
                    family=p.family,
                    src=p.src,
                    dst=p.dst,
                    proto=p.proto,
                    sport=p.sport,
                    dport=p.dport,
                )
                if self._annotate is not None:  # it adds to the JSON what only it knows (policy)
                    annotated = event.to_json()
                    self._annotate(annotated)
                    event = DropEvent.from_json(annotated)
                self._events.append(event)

    def events(self, since: int) -> dict[str, Any]:
        """The kept events after ``since`` (a sequence number), and the cursor for the next call."""
        with self._lock:
            return DropEvents(
                enabled=self._config().drop_events,
                events=tuple(e for e in self._events if e.seq > since),
                next=self._seq,
                error=self.error or None,
            ).to_json()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        self._sample()  # the window moves on even when nobody asks for the status
        return []

    def status(self) -> dict[str, Any]:
        kernel, recent, links = self._sample()
        with self._lock:
            by_reason = dict(self._by_reason)
        return DropCounters(
            events=self._config().drop_events,
            error=self.error or None,
            by_reason=by_reason,
            kernel={k: v for k, v in kernel.items() if v},
            kernel_recent=recent,
            recent_window=RECENT_WINDOW,
            endpoints={name: n for name, n in links.items() if name.startswith(owned.ENDPOINT_PREFIX) and n},
        ).to_json()

    def stop(self) -> None:
        return None


def _ifname(index: int) -> str:
    if not index:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"
