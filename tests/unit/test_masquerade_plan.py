"""Masquerade planning: who is SNATed, who keeps the pod address, and the nft text."""

from __future__ import annotations

import ipaddress as ip

import pytest

from podnet.datapath.masquerade import plan_masquerade, replace_script

POD = [ip.ip_network("10.244.1.0/24")]
CLUSTER = [ip.ip_network("10.244.0.0/16")]
NODES = [ip.IPv4Address("172.16.2.2"), ip.IPv4Address("172.16.3.2"), None]


def test_disabled_or_without_pod_cidrs_removes_the_table() -> None:
    assert plan_masquerade(False, POD, CLUSTER, None, NODES, "eth0") is None
    assert plan_masquerade(True, [], CLUSTER, None, NODES, "eth0") is None
    assert replace_script(None) == "table ip podnet\ndelete table ip podnet\n"


@pytest.mark.parametrize(
    ("native", "exempt"),
    [
        (None, ["10.244.0.0/16"]),
        ("10.0.0.0/8", ["10.0.0.0/8"]),  # the native CIDR covers the pool: one entry
        ("192.168.0.0/16", ["10.244.0.0/16", "192.168.0.0/16"]),
    ],
)
def test_exempt_destinations_are_the_pool_and_the_native_cidr(native: str | None, exempt: list[str]) -> None:
    plan = plan_masquerade(True, POD, CLUSTER, ip.ip_network(native) if native else None, NODES, "eth0")
    assert plan is not None
    assert [str(n) for n in plan.exempt] == exempt
    assert [str(a) for a in plan.node_ips] == ["172.16.2.2", "172.16.3.2"]


def test_script_replaces_the_table_in_one_transaction() -> None:
    plan = plan_masquerade(True, POD, CLUSTER, None, NODES, "eth0")
    script = replace_script(plan)
    assert script.startswith("table ip podnet\ndelete table ip podnet\ntable ip podnet {")
    assert "elements = { 10.244.1.0/24 }" in script
    assert 'oifname "eth0" counter masquerade' in script
    assert "ip saddr != @pod_cidrs return" in script
