"""The operator's loop, whichever datastore it runs on: reconcile every ``tick`` seconds or as soon
as a watch wakes it; while the datastore is away (``outages``) back off and log only the changes
of state; any other failure is logged with its traceback and retried (a malformed object must not
stop IPAM for the whole cluster)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from podnet.store.client import Backoff, OutageLog
from podnet.store.operatorstate import OperatorState

log = logging.getLogger(__name__)


def serve(
    reconcile: Callable[[], object],
    state: OperatorState,
    pools: bool,
    stop: threading.Event,
    tick: float,
    mode: str,
) -> None:
    """Run ``reconcile`` until ``stop``, woken by the watches of what the mode plans from (``pools``:
    the IP pools and the nodes' pool allocations too); ``mode`` names it in the log."""
    wake = threading.Event()
    watch = state.watch(wake.set, pools)

    def when_leading() -> None:
        if state.lead():
            reconcile()

    try:
        what = f"{mode} reconcile ({state.kind})"
        reconcile_forever(when_leading, wake, stop, min(tick, state.max_tick), what, state.outages)
    finally:
        watch.stop(1.0)  # the watch threads die with the process; the lease goes at close()


def reconcile_forever(
    reconcile: Callable[[], object],
    wake: threading.Event,
    stop: threading.Event,
    tick: float,
    what: str,
    outages: tuple[type[BaseException], ...],
) -> None:
    outage = OutageLog(log, what)
    backoff = Backoff(first=min(0.5, tick), cap=max(tick, 10.0))
    while not stop.is_set():
        wait = tick
        try:
            reconcile()
            outage.recovered()
            backoff.reset()
        except outages as exc:
            outage.failed(exc)
            wait = backoff.next()
        except Exception:
            log.exception("%s failed unexpectedly, retrying", what)
        deadline = time.monotonic() + wait
        while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
            wake.wait(min(0.1, wait))
        wake.clear()
