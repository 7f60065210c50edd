"""The agent's policy table against a real nft in a test namespace: with no NetworkPolicy there is
no table and nothing to warn about (the drift check warned "removed behind podnet's back" every
10 s on every node without a policy, flooding the log); with one, a table removed by someone else
is named once and put back."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from podnet.agent.policy import PolicyEnforcer
from podnet.policy import nft
from podnet.policy.sources import Snapshot
from podnet.util import netns

pytestmark = pytest.mark.kernel

DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-in", "namespace": "default"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}


class FixedSource:
    """A policy source that always has the same policies (no datastore needed)."""

    kind = "fixed"

    def __init__(self, policies: list[dict[str, Any]]) -> None:
        self.policies = policies

    def start(self, on_change: Callable[[], None]) -> None:
        pass

    def wait_synced(self, timeout: float) -> bool:
        return True

    def snapshot(self) -> Snapshot:
        return Snapshot(self.policies, [], {})

    def publish(self, node: str, pods: Any) -> bool:
        return True

    def stop(self) -> None:
        pass


def enforcer(policies: list[dict[str, Any]]) -> PolicyEnforcer:
    source = FixedSource(policies)
    found = PolicyEnforcer(lambda: source, lambda: [], lambda: None, lambda: False)
    found._source = source  # what start() does, without its thread (it would not be in the namespace)
    return found


def has_table(ns: str) -> bool:
    argv = ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", nft.TABLE]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def test_no_policy_no_table_and_no_drift_warning(
    netns_factory: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    ns = netns_factory("poldrift")
    policy = enforcer([])
    with netns.entered(ns), caplog.at_level(logging.WARNING, logger="podnet.agent"):
        policy.sync()
        for _ in range(3):
            assert not policy.check_drift()
    assert not has_table(ns)
    assert "behind podnet's back" not in caplog.text


def test_a_removed_table_is_named_once_and_put_back(
    netns_factory: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    ns = netns_factory("poldrift2")
    policy = enforcer([DENY])
    with netns.entered(ns), caplog.at_level(logging.WARNING, logger="podnet.agent"):
        policy.sync()
        assert has_table(ns)
        assert not policy.check_drift()
        subprocess.run(["nft", "delete", "table", "inet", nft.TABLE], check=True, timeout=30)
        assert policy.check_drift()
        assert not policy.check_drift()
    assert has_table(ns)
    assert caplog.text.count("behind podnet's back") == 1
