"""The reconciler between resyncs: it diffs against what it last applied (no kernel dump), and a
resync repairs what was changed behind its back."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from podnet.datapath.modes.base import DesiredState
from podnet.datapath.objects import Route
from podnet.datapath.reconcile import Reconciler

pytestmark = pytest.mark.kernel


def _routes(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "route", "show", "proto", "201"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_cached_rounds_apply_only_the_difference_and_a_resync_repairs_drift(
    netns_factory: Callable[[str], str],
) -> None:
    ns = netns_factory("cache")
    subprocess.run(
        ["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"], check=False
    )
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", "172.16.9.1/24", "dev", "eth0"], check=True)
    one = Route(ipaddress.ip_network("10.244.1.0/24"), "eth0", ipaddress.ip_address("172.16.9.2"))
    two = Route(ipaddress.ip_network("10.244.2.0/24"), "eth0", ipaddress.ip_address("172.16.9.3"))
    with IPRoute(netns=ns) as ipr:
        rec = Reconciler(ipr)
        assert len(rec.apply(DesiredState(routes=(one,))).changes) == 1
        subprocess.run(["ip", "-n", ns, "route", "del", "10.244.1.0/24"], check=True)  # drift
        report = rec.apply(DesiredState(routes=(one, two)), resync=False)
        assert [c.describe() for c in report.changes] == [f"add route {two.describe()}"]  # only the new one
        assert "10.244.1.0/24" not in _routes(ns)  # not seen without a resync
        report = rec.apply(DesiredState(routes=(one, two)), resync=True)
        assert [c.describe() for c in report.changes] == [f"add route {one.describe()}"]
        assert "10.244.1.0/24" in _routes(ns) and "10.244.2.0/24" in _routes(ns)
