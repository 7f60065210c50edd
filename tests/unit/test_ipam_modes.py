"""The IPAM mode registry and the operator's pure pool planner."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.ipam.base import UnsupportedIPAMMode, factory_for, supported_modes
from podnet.ipam.cidr import parse_pool_spec
from podnet.model import NodeInfo
from podnet.operator.plan import NodeLiveness, plan_pool
from podnet.store.nodes import NodeRecord

net = ipaddress.ip_network


def test_registry_has_the_built_modes() -> None:
    assert supported_modes() == ("cluster-pool", "crd", "eni", "kubernetes", "multi-pool")
    assert all(callable(factory_for(mode)) for mode in supported_modes())


@pytest.mark.parametrize("mode", ["aws-eni", "bogus"])
def test_unsupported_mode_lists_supported(mode: str) -> None:
    with pytest.raises(
        UnsupportedIPAMMode,
        match=f"'{mode}' is not supported; supported modes: cluster-pool, crd, eni, kubernetes, multi-pool",
    ):
        factory_for(mode)


def rec(name: str, *requested: str) -> NodeRecord:
    return NodeRecord(NodeInfo(name, ipaddress.IPv4Address("172.16.0.1")), tuple(net(r) for r in requested))


SPEC = parse_pool_spec(["10.244.0.0/22"], 24)  # 4 subnets


def test_requests_are_honoured_before_free_subnets() -> None:
    nodes = {"a": rec("a"), "node1": rec("node1", "10.244.1.0/24"), "node2": rec("node2", "10.244.2.0/24")}
    plan = plan_pool(SPEC, nodes, {}, {}, now=0.0, grace_seconds=60)
    assert dict(plan.assign) == {
        "a": net("10.244.0.0/24"),
        "node1": net("10.244.1.0/24"),
        "node2": net("10.244.2.0/24"),
    }


@pytest.mark.parametrize(
    ("request_cidr", "reason"),
    [
        ("10.244.1.0/24", "already allocated to other"),
        ("10.9.0.0/24", "not a /24 inside the cluster pool"),
        ("10.244.2.0/25", "not a /24 inside the cluster pool"),
    ],
)
def test_bad_request_gets_another_cidr(request_cidr: str, reason: str) -> None:
    plan = plan_pool(SPEC, {"x": rec("x", request_cidr)}, {net("10.244.1.0/24"): "other"}, {}, 0.0, 60)
    assert dict(plan.assign) == {"x": net("10.244.0.0/24")}
    assert len(plan.ignored_requests) == 1
    assert plan.ignored_requests[0].cidr == net(request_cidr)
    assert reason in plan.ignored_requests[0].reason


def test_node_with_cidr_gets_nothing_new() -> None:
    plan = plan_pool(SPEC, {"a": rec("a")}, {net("10.244.3.0/24"): "a"}, {}, 0.0, 60)
    assert plan.empty


def test_exhaustion_lists_waiting_nodes() -> None:
    nodes = {n: rec(n) for n in ("a", "b", "c", "d", "e", "f")}
    plan = plan_pool(SPEC, nodes, {}, {}, 0.0, 60)
    assert len(plan.assign) == 4
    assert plan.exhausted == ("e", "f")


@pytest.mark.parametrize(
    ("gone_since", "now", "mark", "reclaim"),
    [
        ({}, 100.0, ("g",), ()),
        ({"g": 50.0}, 100.0, (), ()),
        ({"g": 40.0}, 100.0, (), ("g",)),
        ({"g": 10.0}, 100.0, (), ("g",)),
    ],
)
def test_gone_node_marked_then_reclaimed_after_grace(
    gone_since: dict[str, float], now: float, mark: tuple[str, ...], reclaim: tuple[str, ...]
) -> None:
    plan = plan_pool(SPEC, {}, {net("10.244.0.0/24"): "g"}, gone_since, now, grace_seconds=60)
    assert plan.mark_gone == mark
    assert tuple(n for n, _ in plan.reclaim) == reclaim


def test_returning_node_clears_marker_and_keeps_cidr() -> None:
    plan = plan_pool(SPEC, {"g": rec("g")}, {net("10.244.2.0/24"): "g"}, {"g": 0.0}, 1000.0, 60)
    assert plan.clear_gone == ("g",)
    assert plan.assign == ()
    assert plan.reclaim == ()


@pytest.mark.parametrize(
    ("liveness", "now", "reclaimed", "why"),
    [
        (None, 1000.0, True, None),  # never reported (an old agent): the grace period alone decides
        (NodeLiveness(heartbeat=990.0, endpoints=0), 1000.0, False, "less than 60s ago"),
        (NodeLiveness(heartbeat=900.0, endpoints=0), 1000.0, True, None),
        (NodeLiveness(heartbeat=900.0, endpoints=3), 1000.0, False, "had 3 pod endpoint(s)"),
        (NodeLiveness(heartbeat=900.0, endpoints=3), 900.0 + 3600.0, True, None),  # the fence lapsed
    ],
)
def test_reclaim_waits_for_a_silent_agent_and_fences_nodes_with_endpoints(
    liveness: NodeLiveness | None, now: float, reclaimed: bool, why: str | None
) -> None:
    cidr = net("10.244.0.0/24")
    lives = {"g": liveness} if liveness is not None else {}
    plan = plan_pool(SPEC, {}, {cidr: "g"}, {"g": now - 120.0}, now, 60, lives, fence_seconds=3600)
    assert plan.reclaim == ((("g", (cidr,)),) if reclaimed else ())
    if why is None:
        assert plan.fenced == ()
    else:
        assert plan.fenced[0][0] == "g" and why in plan.fenced[0][1]
    # a fenced CIDR is never handed to another node
    other = plan_pool(SPEC, {"n": rec("n", str(cidr))}, {cidr: "g"}, {"g": now - 120.0}, now, 60, lives)
    assert all(c != cidr for _, c in other.assign)
