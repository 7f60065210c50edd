"""BIG TCP (enableIPv4BIGTCP / enableIPv6BIGTCP): the pure planner of the underlay device's sizes,
the settings Cilium's names and refusals, and the status rows Cilium users read."""

from __future__ import annotations

import pytest

from podnet.config import ConfigError, load_config
from podnet.datapath.bigtcp import BIG_TCP_SIZE, LEGACY_SIZE, BigTcp, plan_big_tcp, size_changes
from podnet.datapath.kernel.rtnl import LinkSizes
from podnet.statusdoc.routing import BigTcpFamily, MtuStatus

VETH = LinkSizes(gso=65536, gro=65536, tso_max=524280, gso_ipv4=65536, gro_ipv4=65536)
NATIVE = {"nodeName": "n1", "routingMode": "native", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}


def test_a_capable_device_gets_big_tcp_for_the_families_asked() -> None:
    plan = plan_big_tcp(True, False, "eth0", VETH)
    assert (plan.ipv4, plan.ipv6) == (BIG_TCP_SIZE, LEGACY_SIZE)
    assert plan.veth_sizes() == (None, BIG_TCP_SIZE) and plan.ipv4_problem is None
    assert size_changes(plan, VETH) == (None, BIG_TCP_SIZE)
    done = LinkSizes(65536, 65536, 524280, BIG_TCP_SIZE, BIG_TCP_SIZE)
    assert size_changes(plan, done) == (None, None)  # nothing to write twice
    half = LinkSizes(65536, 65536, 524280, BIG_TCP_SIZE, 65536)
    assert size_changes(plan, half) == (None, BIG_TCP_SIZE)
    both = plan_big_tcp(True, True, "eth0", VETH)
    assert both.veth_sizes() == (BIG_TCP_SIZE, BIG_TCP_SIZE)
    assert plan_big_tcp(False, False, "eth0", VETH) == BigTcp()


def test_a_device_or_kernel_that_cannot_keeps_64k_and_says_why() -> None:
    small = LinkSizes(gso=65536, gro=65536, tso_max=65536, gso_ipv4=65536, gro_ipv4=65536)
    plan = plan_big_tcp(True, True, "ens5", small)
    assert (plan.ipv4, plan.ipv6) == (LEGACY_SIZE, LEGACY_SIZE) and plan.veth_sizes() == (None, None)
    assert plan.ipv4_problem and "ens5" in plan.ipv4_problem and "65536" in plan.ipv4_problem
    assert plan.ipv6_problem and "enableIPv6BIGTCP" in plan.ipv6_problem
    old_kernel = LinkSizes(gso=65536, gro=65536, tso_max=524280, gso_ipv4=None, gro_ipv4=None)
    plan = plan_big_tcp(True, True, "eth0", old_kernel)
    assert plan.ipv4 == LEGACY_SIZE and plan.ipv4_problem and "6.3" in plan.ipv4_problem
    assert plan.ipv6 == BIG_TCP_SIZE and plan.ipv6_problem is None
    assert size_changes(plan, old_kernel) == (BIG_TCP_SIZE, None)  # no IPv4 attribute is ever sent


def test_off_undoes_only_podnets_own_size() -> None:
    off = BigTcp()
    ours = LinkSizes(BIG_TCP_SIZE, BIG_TCP_SIZE, 524280, BIG_TCP_SIZE, BIG_TCP_SIZE)
    assert size_changes(off, ours) == (LEGACY_SIZE, LEGACY_SIZE)
    operators = LinkSizes(131072, 131072, 524280, 262144, 262144)
    assert size_changes(off, operators) == (None, None)
    assert size_changes(off, VETH) == (None, None)


@pytest.mark.parametrize("key", ["enableIPv4BIGTCP", "enable-ipv4-big-tcp", "enable_ipv4_big_tcp"])
def test_ciliums_spellings_are_accepted(key: str) -> None:
    assert load_config({**NATIVE, key: "true"}).enable_ipv4_big_tcp
    assert not load_config(NATIVE).enable_ipv4_big_tcp  # off unless asked, as in Cilium


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"routingMode": "tunnel"}, "routingMode=native"),
        ({"tunnelFallback": True}, "tunnelFallback"),
    ],
)
def test_big_tcp_with_a_tunnel_is_refused(extra: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**NATIVE, **extra, "enableIPv4BIGTCP": True})
    assert refused.value.key == "enableIPv4BIGTCP" and words in str(refused.value)


def test_big_tcp_for_a_family_the_cluster_does_not_run_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**NATIVE, "enableIPv6BIGTCP": True})
    assert "ipv6.enabled=true" in str(refused.value)


def test_status_rows_read_as_ciliums() -> None:
    from podnet.statusdoc.document import StatusDocument
    from podnet.statusdoc.routing import RoutingStatus
    from podnet.verify.nodereport import NodeReport
    from podnet.verify.render import status_rows

    assert BigTcpFamily(BIG_TCP_SIZE).line() == "Enabled [196608]"
    assert BigTcpFamily().line() == "Disabled"
    assert BigTcpFamily(problem="ens5 takes at most 65536").line() == "Disabled (ens5 takes at most 65536)"
    mtu = MtuStatus(1500, 1500, "eth0", BigTcpFamily(BIG_TCP_SIZE), BigTcpFamily(problem="no"))
    assert MtuStatus.from_json(mtu.to_json()) == mtu
    assert MtuStatus.from_json({"device": 1500}) == MtuStatus(device=1500)  # an older agent's document
    doc = StatusDocument(ready=True, mtu=mtu, routing=RoutingStatus(families=("IPv4", "IPv6")))
    rows = dict(status_rows(NodeReport(doc, routing_summary="Native")))
    assert rows["IPv4 BIG TCP"] == "Enabled [196608]" and rows["IPv6 BIG TCP"] == "Disabled (no)"
    v4only = StatusDocument(ready=True, mtu=mtu, routing=RoutingStatus(families=("IPv4",)))
    assert "IPv6 BIG TCP" not in dict(status_rows(NodeReport(v4only, routing_summary="Native")))
