"""Multi-pool and CRD-backed IPAM without a cluster: pool choice, Cilium's pre-allocation formula,
the operator's plan, and both node allocators fed by hand."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

import pytest

from podnet.ipam.base import IPAMContext, PodRef
from podnet.ipam.cidr import free_subnet
from podnet.ipam.crd import CrdAllocator
from podnet.ipam.host import IPAMError, IPAMExhausted, pod_capacity
from podnet.ipam.multi_pool import MultiPoolAllocator
from podnet.ipam.multi_pool_model import (
    CidrUse,
    needed_addresses,
    overlapping,
    parse_pool,
    pool_of,
    pre_allocation,
    releasable,
)
from podnet.kube.convert import routed_cidrs
from podnet.lab.kubeipam import crd_pool
from podnet.operator.multi_plan import NodePools, plan_multi_pool

net, addr = ipaddress.ip_network, ipaddress.ip_address


@pytest.mark.parametrize(
    ("pod", "ns", "expected"),
    [
        ({}, {}, "default"),
        ({"ipam.podnet.io/ip-pool": "blue"}, {}, "blue"),
        ({"ipam.cilium.io/ip-pool": "blue"}, {}, "blue"),  # Cilium's name accepted
        ({}, {"ipam.cilium.io/ip-pool": "green"}, "green"),  # the namespace's
        ({"ipam.podnet.io/ip-pool": "blue"}, {"ipam.podnet.io/ip-pool": "green"}, "blue"),  # the pod's wins
        ({"ipam.podnet.io/ip-pool": " "}, {}, "default"),
    ],
)
def test_pool_of(pod: dict[str, str], ns: dict[str, str], expected: str) -> None:
    assert pool_of(PodRef("n", "p", tuple(pod.items()), tuple(ns.items()))) == expected


@pytest.mark.parametrize(
    ("in_use", "pending", "pre", "expected"),
    [(0, 0, 8, 8), (1, 0, 8, 16), (8, 0, 8, 16), (9, 0, 8, 24), (3, 2, 8, 16), (5, 0, 2, 8), (4, 1, 0, 5)],
)
def test_needed_is_ciliums_formula(in_use: int, pending: int, pre: int, expected: int) -> None:
    assert needed_addresses(in_use, pending, pre) == expected


def test_pre_allocation_defaults_to_eight() -> None:
    assert pre_allocation((("blue", 2),), "blue") == 2
    assert pre_allocation((("blue", 2),), "other") == 8


def test_releasable_keeps_what_is_needed_and_gives_back_the_newest_empty() -> None:
    uses = [
        CidrUse(net("10.0.0.0/29"), 1, 5),
        CidrUse(net("10.0.0.8/29"), 0, 5),
        CidrUse(net("10.0.0.16/29"), 0, 5),
    ]
    assert releasable(uses, 4) == (net("10.0.0.8/29"), net("10.0.0.16/29"))
    assert releasable(uses, 8) == (net("10.0.0.16/29"),)
    assert releasable(uses, 11) == ()


def test_parse_pool_and_its_errors() -> None:
    pool = parse_pool("blue", {"ipv4": {"cidrs": ["10.1.0.0/16"], "maskSize": 24}})
    assert pool.families == (4,) and pool.mask_size(4) == 24 and pool.mask_size(6) is None
    for spec, why in [
        ({}, "neither spec.ipv4 nor spec.ipv6"),
        ({"ipv4": {"cidrs": ["10.1.0.0/33"], "maskSize": 24}}, "spec.ipv4.cidrs"),
        ({"ipv4": {"cidrs": ["10.1.0.0/16"], "maskSize": 8}}, "maskSize 8 must lie between /16"),
        ({"ipv4": {"cidrs": ["fd00::/64"], "maskSize": 24}}, "other family"),
        ({"ipv4": {"cidrs": [], "maskSize": 24}}, "is empty"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_pool("bad", spec)


def test_a_later_overlapping_pool_is_refused() -> None:
    a = parse_pool("a", {"ipv4": {"cidrs": ["10.1.0.0/16"], "maskSize": 24}})
    b = parse_pool("b", {"ipv4": {"cidrs": ["10.1.128.0/17"], "maskSize": 24}})
    c = parse_pool("c", {"ipv4": {"cidrs": ["10.2.0.0/16"], "maskSize": 24}})
    assert overlapping([a, b, c]) == {
        "b": "pool b is not used: its CIDR 10.1.128.0/17 overlaps 10.1.0.0/16 of pool a; give it CIDRs no "
        "other pool has"
    }


# ---- the operator's plan -----------------------------------------------------------------------

DEFAULT = parse_pool("default", {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}})
SMALL = parse_pool("small", {"ipv4": {"cidrs": ["10.251.0.0/28"], "maskSize": 29}})


def test_plan_grows_each_node_until_capacity_covers_the_need() -> None:
    nodes = {
        "a": NodePools({"small": {4: 6}}, {}, {"small": (net("10.251.0.0/29"),)}),
        "b": NodePools({"default": {4: 8}}),
    }
    plan = plan_multi_pool([DEFAULT, SMALL], {}, nodes, ["a", "b"])
    assert plan.allocated == {
        "a": {"small": (net("10.251.0.0/29"), net("10.251.0.8/29"))},
        "b": {"default": (net("10.244.0.0/24"),)},
    }
    assert plan.errors == {} and plan.pool_nodes["small"] == {
        "a": (net("10.251.0.0/29"), net("10.251.0.8/29"))
    }


def test_plan_names_an_exhausted_pool_an_unknown_one_and_a_refused_one() -> None:
    clash = parse_pool("clash", {"ipv4": {"cidrs": ["10.251.0.0/24"], "maskSize": 28}})
    nodes = {"a": NodePools({"small": {4: 11}, "nosuch": {4: 8}, "clash": {4: 8}})}
    plan = plan_multi_pool([SMALL, clash], {}, nodes, ["a"])
    assert plan.allocated == {"a": {"small": (net("10.251.0.0/29"), net("10.251.0.8/29"))}}
    errors = plan.errors["a"]
    assert (
        "pool small is exhausted" in errors["small"]
        and "needs 11 IPv4 addresses and holds 10" in errors["small"]
    )
    assert "no PodnetIPPool 'nosuch'" in errors["nosuch"]
    assert "overlaps 10.251.0.0/28 of pool small" in errors["clash"] == plan.pool_errors["clash"]


def test_plan_frees_released_cidrs_and_gives_nothing_to_nodes_that_are_gone() -> None:
    nodes = {
        "a": NodePools(
            {"default": {4: 8}},
            {"default": frozenset({net("10.244.1.0/24")})},
            {"default": (net("10.244.0.0/24"), net("10.244.1.0/24"))},
        ),
        "gone": NodePools({"default": {4: 8}}, {}, {"default": (net("10.244.2.0/24"),)}),
        "new-but-gone": NodePools({"default": {4: 8}}),
    }
    plan = plan_multi_pool([DEFAULT], {}, nodes, ["a"])
    assert plan.allocated == {"a": {"default": (net("10.244.0.0/24"),)}}  # the gone ones are untouched


def test_free_subnet_avoids_cidrs_of_another_mask_size() -> None:
    assert free_subnet([net("10.0.0.0/24")], 26, [net("10.0.0.0/25")]) == net("10.0.0.128/26")
    assert free_subnet([net("10.0.0.0/24")], 26, [net("10.0.0.0/24")]) is None
    assert pod_capacity(net("10.0.0.0/29")) == 5 and pod_capacity(net("fd00::/126")) == 2


# ---- the node's allocators, fed by hand ---------------------------------------------------------


class Hooks:
    def __init__(self) -> None:
        self.prepared: list[tuple[object, ...]] = []
        self.changes = 0

    def context(self) -> IPAMContext:
        return IPAMContext(None, "n1", prepare=self.prepared.append, changed=self._changed)  # type: ignore[arg-type]

    def _changed(self) -> None:
        self.changes += 1


def blue_pod(name: str) -> PodRef:
    return PodRef("default", name, (("ipam.podnet.io/ip-pool", "small"),))


def test_multi_pool_allocator_waits_for_the_operator_and_prepares_router_ips_first() -> None:
    hooks = Hooks()
    alloc = MultiPoolAllocator("n1", (("default", 8), ("small", 2)), hooks.context(), wait=5.0)
    alloc.set_state({"small": [net("10.251.0.0/29")]}, {}, {"small": SMALL, "default": DEFAULT})
    assert hooks.prepared == [(addr("10.251.0.1"),)]
    for i in range(5):
        (a,) = alloc.allocate(f"c{i}/eth0", blue_pod(f"p{i}"))
        assert a.ip in net("10.251.0.0/29") and a.gateway == addr("10.251.0.1")
    small = next(e for e in alloc.requested() if e["pool"] == "small")
    assert small["needed"] == {"ipv4-addrs": 8}  # roundUp(5 + 0 + 2, 2)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(alloc.allocate("c5/eth0", blue_pod("p5"))))
    waiter.start()
    time.sleep(0.3)
    assert next(e for e in alloc.requested() if e["pool"] == "small")["needed"] == {"ipv4-addrs": 8}  # 5+1+2
    alloc.set_state({"small": [net("10.251.0.0/29"), net("10.251.0.8/29")]}, {}, {"small": SMALL})
    waiter.join(5)
    ((a,),) = got  # type: ignore[misc]
    assert a.ip == addr("10.251.0.10") and a.gateway == addr("10.251.0.9")  # type: ignore[attr-defined]
    assert hooks.prepared[-1] == (addr("10.251.0.9"),)


def test_multi_pool_allocator_fails_fast_when_the_operator_reports_the_pool_exhausted() -> None:
    alloc = MultiPoolAllocator("n1", (), Hooks().context(), wait=30.0)
    alloc.set_state({"small": [net("10.251.0.0/29")]}, {"small": "pool small is exhausted"}, {"small": SMALL})
    for i in range(5):
        alloc.allocate(f"c{i}/eth0", blue_pod(f"p{i}"))
    started = time.monotonic()
    with pytest.raises(IPAMExhausted, match=r"IP pool .small. has no free IPv4 address on node n1.*exhaust"):
        alloc.allocate("c5/eth0", blue_pod("p5"))
    assert time.monotonic() - started < 10
    with pytest.raises(IPAMExhausted, match="no PodnetIPPool 'nosuch'"):
        alloc.allocate("x/eth0", PodRef("default", "x", (("ipam.podnet.io/ip-pool", "nosuch"),)))
    assert "c5/eth0" not in alloc.allocated()


def test_multi_pool_allocator_gives_back_empty_cidrs_and_restores() -> None:
    alloc = MultiPoolAllocator("n1", (("default", 8),), Hooks().context(), wait=0.2)
    cidrs = [net("10.244.0.0/28"), net("10.244.0.16/28"), net("10.244.0.32/28")]  # 13 pod addresses each
    alloc.set_state({"default": cidrs}, {}, {"default": DEFAULT})
    alloc.restore({"old/eth0": (addr("10.244.0.2"),)})
    (entry,) = alloc.requested()
    assert entry == {"pool": "default", "needed": {"ipv4-addrs": 16}, "release": ["10.244.0.32/28"]}
    assert all(a.ip not in cidrs[2] for i in range(25) for a in alloc.allocate(f"c{i}/eth0"))
    with pytest.raises(IPAMExhausted):  # the released CIDR is never used again
        alloc.allocate("c25/eth0")
    with pytest.raises(IPAMError, match="in none of the node's pool CIDRs"):
        alloc.restore({"lost/eth0": (addr("10.9.9.9"),)})


def test_crd_allocator_keeps_its_router_and_reports_addresses_outside_the_pool() -> None:
    hooks = Hooks()
    alloc = CrdAllocator("n1", hooks.context())
    with pytest.raises(IPAMExhausted, match=r"node n1: its CRD pool \(podnetnode n1 spec.ipam.pool\)"):
        alloc.allocate("c0/eth0")
    alloc.set_pool({addr("10.0.0.5"), addr("10.0.0.9")}, {"10.0.0.9": "router"})  # recorded earlier
    assert alloc.router_ips() == (addr("10.0.0.9"),) and hooks.prepared == [(addr("10.0.0.9"),)]
    (a,) = alloc.allocate("c1/eth0", PodRef("team", "web"))
    assert (a.ip, a.gateway) == (addr("10.0.0.5"), addr("10.0.0.9"))
    with pytest.raises(IPAMExhausted, match=r"2 address.*1 in use by pods, 1 kept as the node.s router IP"):
        alloc.allocate("c2/eth0")
    assert alloc.used() == {"10.0.0.9": "router", "10.0.0.5": "team/web"}
    alloc.set_pool({addr("10.0.0.9"), addr("10.0.0.6")}, alloc.used())
    (problem,) = alloc.problems()
    assert "10.0.0.5 of pod team/web is no longer in podnetnode n1 spec.ipam.pool" in problem
    assert set(alloc.cidrs) == {net("10.0.0.5/32"), net("10.0.0.6/32"), net("10.0.0.9/32")}  # .5 still routed


def test_routed_cidrs_of_every_mode() -> None:
    assert routed_cidrs({"podCIDRs": ["10.244.1.0/24"]}, {}) == (net("10.244.1.0/24"),)
    spec = {
        "pools": {"allocated": [{"pool": "a", "cidrs": ["10.9.0.0/27"]}]},
        "pool": {"10.1.0.4": {}, "10.1.0.5": {}},
    }
    assert routed_cidrs(spec, {"used": {"10.1.0.9": {"owner": "x"}}}) == (
        net("10.9.0.0/27"),
        net("10.1.0.4/31"),
        net("10.1.0.9/32"),
    )


def test_the_labs_crd_pools() -> None:
    assert crd_pool(["10.244.0.0/16"], 24, 2, size=3) == ["10.244.2.1", "10.244.2.2", "10.244.2.3"]
    with pytest.raises(ValueError, match="no /24 number 300"):
        crd_pool(["10.244.0.0/24", "10.245.0.0/24"], 24, 300)


def test_free_subnet_agrees_with_walking_every_subnet() -> None:
    """The jumping search against the obvious one, on random pools, masks and holdings (seeded)."""
    import random

    rnd = random.Random(14)

    def walk(cidrs: list[Any], mask: int, taken: list[Any]) -> Any:
        for cidr in cidrs:
            for subnet in cidr.subnets(new_prefix=mask) if mask >= cidr.prefixlen else ():
                if not any(subnet.overlaps(t) for t in taken):
                    return subnet
        return None

    def some_cidr(prefixes: list[int]) -> Any:
        third = rnd.randint(0, 3)
        return net(
            f"10.{rnd.randint(0, 3)}.{third}.{rnd.randrange(0, 256, 16)}/{rnd.choice(prefixes)}", strict=False
        )

    for _ in range(2000):
        pools = [some_cidr([22, 23, 24]) for _ in range(rnd.randint(1, 2))]
        mask = rnd.choice([21, 24, 25, 26, 27, 28])
        taken = [some_cidr([24, 26, 28, 30]) for _ in range(rnd.randint(0, 12))]
        assert free_subnet(pools, mask, taken) == walk(pools, mask, taken), (pools, mask, taken)


def test_free_subnet_in_a_huge_pool_does_not_walk_it() -> None:
    taken = [net(f"10.0.{i}.0/24") for i in range(250)]
    assert free_subnet([net("10.0.0.0/8")], 30, taken) == net("10.0.250.0/30")
    assert free_subnet([net("10.0.0.0/8")], 30, [net("10.0.0.0/8")]) is None  # 4M subnets, none free
