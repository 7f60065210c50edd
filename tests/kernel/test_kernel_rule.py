"""podnet.datapath.kernel.rule and the reconciler's rules, in a real namespace, both families."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from podnet import owned
from podnet.datapath.kernel import rule as krule
from podnet.datapath.modes.base import DesiredState
from podnet.datapath.objects import Rule
from podnet.datapath.reconcile import Reconciler

pytestmark = pytest.mark.kernel

FROM_POD = Rule(
    priority=owned.RULE_PRIORITY_FROM_ENDPOINT, table=11, family=4, src=ipaddress.ip_network("10.0.1.5/32")
)
TO_POD = Rule(
    priority=owned.RULE_PRIORITY_TO_ENDPOINT,
    table=owned.MAIN_TABLE,
    family=4,
    dst=ipaddress.ip_network("10.0.1.5/32"),
)
FROM_POD6 = Rule(
    priority=owned.RULE_PRIORITY_FROM_ENDPOINT, table=11, family=6, src=ipaddress.ip_network("fd00::5/128")
)


def ip_rules(ns: str, family: str = "-4") -> str:
    return subprocess.run(
        ["ip", family, "-n", ns, "rule", "show"], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def test_ensure_is_idempotent_and_delete_tolerates_gone(netns_factory: Callable[[str], str]) -> None:
    ns = netns_factory("rules")
    with IPRoute(netns=ns) as ipr:
        assert krule.ensure_rule(ipr, FROM_POD) is True
        assert krule.ensure_rule(ipr, FROM_POD) is False
        assert krule.ensure_rule(ipr, FROM_POD6) is True
        assert set(krule.dump_rules(ipr)) == {FROM_POD, FROM_POD6}
        assert "111:\tfrom 10.0.1.5 lookup 11 proto 201" in ip_rules(ns)
        assert "from fd00::5 lookup 11 proto 201" in ip_rules(ns, "-6")
        assert krule.delete_rule(ipr, FROM_POD) is True
        assert krule.delete_rule(ipr, FROM_POD) is False
        assert krule.dump_rules(ipr) == [FROM_POD6]


def test_reconciler_applies_rules_and_prunes_only_its_own(netns_factory: Callable[[str], str]) -> None:
    ns = netns_factory("rules")
    subprocess.run(
        ["ip", "-n", ns, "rule", "add", "pref", "300", "from", "10.9.9.9", "lookup", "77"], check=True
    )
    with IPRoute(netns=ns) as ipr:
        report = Reconciler(ipr).apply(DesiredState(rules=(TO_POD, FROM_POD)))
        assert report.errors == () and len(report.changes) == 2
        assert Reconciler(ipr).apply(DesiredState(rules=(TO_POD, FROM_POD))).changes == ()
        report = Reconciler(ipr).apply(DesiredState(rules=(TO_POD,)))
        assert [c.describe() for c in report.changes] == [f"delete rule {FROM_POD.describe()}"]
        assert krule.dump_rules(ipr) == [TO_POD]
    assert "from 10.9.9.9 lookup 77" in ip_rules(ns), "a rule podnet does not own was touched"
    assert "20:\tfrom all to 10.0.1.5 lookup main proto 201" in ip_rules(ns)
