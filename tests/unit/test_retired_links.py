"""podnet.agent.retired: a DEL's kick gets its veth deleted, bursts share a purge, failures retry."""

from __future__ import annotations

import threading

from podnet.agent.retired import RetiredLinks


def test_kicks_are_purged_and_a_burst_shares_purges() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def purge() -> bool:
        gate.wait(5)  # the first purge is slow: kicks pile up behind it
        calls.append(1)
        return True

    links = RetiredLinks(purge)
    for _ in range(20):
        links.kick()
    gate.set()
    assert links.flush(5)
    assert 1 <= len(calls) <= 3  # twenty DELs, one or two batches
    assert links.batches == len(calls)
    links.kick()
    assert links.flush(5) and len(calls) >= 2


def test_a_failed_purge_is_reported_and_the_next_kick_retries() -> None:
    outcomes = [RuntimeError("EBUSY"), True]

    def purge() -> bool:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    links = RetiredLinks(purge)
    links.kick()
    assert links.flush(5)
    assert links.last_error == "EBUSY" and links.batches == 0
    links.kick()
    assert links.flush(5)
    assert links.last_error == "" and links.batches == 1 and outcomes == []


def test_flush_with_nothing_retired_returns_at_once() -> None:
    assert RetiredLinks(lambda: False).flush(0.01)
