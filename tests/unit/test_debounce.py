"""Background writes after changes: coalesced, retried until they succeed, delayed unless urgent."""

from __future__ import annotations

import threading
import time

from podnet.util.debounce import Debounced


def test_a_burst_of_kicks_gives_few_writes_and_flush_waits_for_them() -> None:
    calls: list[float] = []
    gate = threading.Event()

    def write() -> None:
        gate.wait(2)
        calls.append(time.monotonic())

    d = Debounced(write, "t")
    for _ in range(50):
        d.kick()
    gate.set()
    assert d.flush(3) and 1 <= len(calls) <= 2
    d.stop()


def test_a_failing_write_is_retried_until_it_succeeds() -> None:
    attempts = []

    def write() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("API server away")

    d = Debounced(write, "t", retry_cap=0.3)
    d.kick()
    assert d.flush(5) and len(attempts) == 3 and d.last_error == ""
    d.stop()


def test_delay_lets_the_caller_finish_unless_urgent() -> None:
    done: list[float] = []
    d = Debounced(lambda: done.append(time.monotonic()), "t", delay=2.0)
    started = time.monotonic()
    d.kick()
    assert d.flush(5) and done[-1] - started >= 1.9
    started = time.monotonic()
    d.kick(urgent=True)
    assert d.flush(5) and done[-1] - started < 1.5  # not the 2 s delay
    d.stop()
