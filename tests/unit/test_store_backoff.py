"""Back-off and outage logging: waits grow to a cap, an outage logs its start, reminders and its end."""

from __future__ import annotations

import logging

import pytest

from podnet.store.client import Backoff, OutageLog


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(first=0.5, cap=4.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5


def test_an_outage_is_logged_as_state_changes(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = OutageLog(log, "etcd probe", remind=3600)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(50):
            outage.failed("connection refused")
        outage.recovered()
        outage.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0] == "etcd probe failed: connection refused; retrying with back-off"
    assert messages[1].startswith("etcd probe works again after")
