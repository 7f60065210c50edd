"""Deletes the pod veths that CNI DEL retired, off the DEL's path and in batches.

A DEL takes its veth down and renames it into ``owned.RETIRED_GROUP`` (``endpoint.retire_endpoint``)
and kicks this; one thread then runs ``ip link del group`` until no kick is pending, so a burst of
DELs pays the kernel's RCU wait once. The thread exists only while there is work. A kill -9
between retiring and purging leaves links in the group: the agent purges once when it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class RetiredLinks:
    def __init__(self, purge: Callable[[], bool]) -> None:
        self._purge = purge
        self._cv = threading.Condition()
        self._wanted = 0  # kicks so far
        self._done = 0  # kicks that a finished purge covered
        self._running = False
        self.batches = 0  # purges that deleted something
        self.last_error = ""

    def purge_now(self) -> None:
        """One purge in the caller's thread (at start: what a killed agent left)."""
        self._purge_logged()

    def kick(self) -> None:
        """A DEL retired a link: have it deleted soon."""
        with self._cv:
            self._wanted += 1
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="podnet-retired-veths", daemon=True).start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every link retired so far is deleted (or the purge failed); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._done >= self._wanted, timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._done >= self._wanted:
                    self._running = False
                    self._cv.notify_all()
                    return
                target = self._wanted
            self._purge_logged()
            with self._cv:
                self._done = target
                self._cv.notify_all()

    def _purge_logged(self) -> None:
        try:
            if self._purge():
                self.batches += 1
            self.last_error = ""
        except Exception as exc:  # the next DEL (or the next start) tries again
            self.last_error = str(exc)
            log.warning("deleting retired pod veths failed (the next DEL retries): %s", exc)
