"""Pod pools never overlap the underlay: the agent refuses to start, the operator never hands out
a node subnet that holds a node's own address (issue 10.10)."""

from __future__ import annotations

import ipaddress

from podnet.agent.underlay import Underlay, pool_conflicts
from podnet.ipam.cidr import parse_pool_spec
from podnet.model import NodeInfo
from podnet.operator.plan import plan_pool
from podnet.store.nodes import NodeRecord

net = ipaddress.ip_network
UNDERLAY = Underlay(
    "eth0", 2, 1500, ipaddress.IPv4Address("100.73.1.5"), None, (net("100.73.1.0/24"),),
    (ipaddress.ip_address("100.73.1.1"),),
)  # fmt: skip


def test_agent_sees_pools_over_its_underlay() -> None:
    assert pool_conflicts([net("10.244.0.0/16")], UNDERLAY) == []
    problems = pool_conflicts([net("100.73.0.0/16")], UNDERLAY)
    assert problems == [
        "pod CIDR 100.73.0.0/16 overlaps the underlay network 100.73.1.0/24 of eth0",
        "pod CIDR 100.73.0.0/16 contains the underlay gateway 100.73.1.1",
    ]


def test_operator_never_hands_out_a_subnet_holding_a_node_address() -> None:
    spec = parse_pool_spec(["100.73.0.0/22"], 24)
    nodes = {
        "n1": NodeRecord(NodeInfo("n1", ipaddress.IPv4Address("100.73.0.9"))),
        "n2": NodeRecord(NodeInfo("n2", ipaddress.IPv4Address("192.168.0.2"))),
    }
    plan = plan_pool(spec, nodes, {}, {}, 0.0, 60)
    assert dict(plan.assign) == {"n1": net("100.73.1.0/24"), "n2": net("100.73.2.0/24")}
    assert plan.blocked == ((net("100.73.0.0/24"), "holds node n1's address 100.73.0.9"),)
