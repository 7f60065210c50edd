"""``podnet ipam`` and status's IPAM line (issue 29, pure): counts people can read (an IPv6 /64
is ``2^64-2``, not 18446744073709551614) while ``-o json`` keeps exact integers; a pool's total
row says EXHAUSTED and names the nodes when one of them is; each mode's allocator says why a node
is exhausted (crd: the ERROR column is no longer empty)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from podnet.ipam.base import PodRef
from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.ipam.crd import CrdAllocator
from podnet.ipam.multi_pool import MultiPoolAllocator
from podnet.ipam.multi_pool_model import parse_pool
from podnet.verify.ipam import format_capacity, node_use, pool_state, pool_totals, report_lines
from podnet.verify.render import ipam_line

addr = ipaddress.ip_address
net = ipaddress.ip_network
V6 = (1 << 64) - 2  # the pod addresses of a /64: all but network and router


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (1, "1"),
        (254, "254"),
        (65533, "65533"),
        (999_999, "999999"),  # six digits: exact
        (1 << 20, "2^20"),
        ((1 << 20) - 3, "2^20-3"),
        ((1 << 64) - 2, "2^64-2"),  # a /64's pod addresses: network and router reserved
        (18446744073709551614, "2^64-2"),  # as the issue saw it
        (36893488147419103228, "2^65-4"),  # two /64s, the total row
        (1 << 64, "2^64"),
        ((1 << 64) + 5, "2^64+5"),
        (3 * (1 << 63), "~2.8e19"),  # not near a power of two
        (10**19, "~1.0e19"),
        (1_500_000, "~1.5e6"),
    ],
)
def test_format_capacity(n: int, text: str) -> None:
    assert format_capacity(n) == text


def use(used: int, capacity: int, error: str | None = None, exhausted: bool | None = False) -> dict[str, Any]:
    """A node's share of a pool as its agent reports it; ``exhausted=None``: an older agent."""
    found: dict[str, Any] = {"cidrs": [], "used": used, "capacity": capacity, "needed": None, "error": error}
    if exhausted is not None:
        found["exhausted"] = exhausted
    return found


FULL_CRD = "exhausted: all 4 addresses of podnetnode node1 spec.ipam.pool (10.244.0.1/32) in use"
POOL_DRY = "pool small is exhausted: no free /29 left in 10.251.0.0/27"


@pytest.mark.parametrize(
    ("nodes", "exhausted", "exhausted_nodes", "state"),
    [
        ({"node1": use(2, 253), "node2": use(0, 253)}, False, [], "ok"),
        # the issue: a node exhausted, the total row said ok
        ({"node1": use(3, 3, FULL_CRD, True), "node2": use(1, 3)}, True, ["node1"], "EXHAUSTED on node1"),
        (
            {"node2": use(3, 3, FULL_CRD, True), "node1": use(3, 3, FULL_CRD, True)},
            True,
            ["node1", "node2"],
            "EXHAUSTED on node1, node2",
        ),
        # exhausted without an error (the agent's flag alone)
        ({"node1": use(1, 1, None, True)}, True, ["node1"], "EXHAUSTED on node1"),
        # multi-pool: the operator has no CIDR left, but the nodes still have free addresses
        (
            {"node1": use(8, 10, POOL_DRY), "node2": use(1, 5, POOL_DRY)},
            True,
            [],
            "EXHAUSTED: the pool gives no node more; 6 free on its nodes",
        ),
        # an agent from before the flag: its error's word
        ({"node1": use(5, 5, "pool x is exhausted", None)}, True, ["node1"], "EXHAUSTED on node1"),
        ({"node1": use(0, 0, "there is no PodnetIPPool 'x'", None)}, False, [], "ok"),
    ],
)
def test_pool_totals_and_state(
    nodes: dict[str, dict[str, Any]], exhausted: bool, exhausted_nodes: list[str], state: str
) -> None:
    entry = pool_totals({name: node_use(u) for name, u in nodes.items()})
    assert entry["exhausted"] is exhausted and entry["exhaustedNodes"] == exhausted_nodes
    assert entry["used"] == sum(u["used"] for u in nodes.values())
    assert pool_state(entry) == state


def _report(pool: str, family: int, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shared = {name: node_use(u) for name, u in nodes.items()}
    entry = {"pool": pool, "family": family, "poolCIDRs": [], "nodes": shared, **pool_totals(shared)}
    return {"nodes": {name: {"failedAdds": []} for name in nodes}, "pools": {f"{pool}/IPv{family}": entry}}


def test_table_names_the_exhausted_node_and_why() -> None:
    report = _report("crd", 4, {"node1": use(3, 3, FULL_CRD, True), "node2": use(1, 3)})
    header, node1, node2, total = report_lines(report)
    assert node1.split()[:2] == ["crd", "-"] and "node1" in node1 and node1.endswith(FULL_CRD)
    assert node2.rstrip().endswith("-") and "1/3" in node2
    assert "total" in total and "4/6" in total and total.endswith("EXHAUSTED on node1")
    assert header.index("ERROR") == node1.index(FULL_CRD)  # the columns line up


def test_table_and_json_of_ipv6_slash_64s() -> None:
    report = _report("default", 6, {"node1": use(1, V6), "node2": use(0, V6)})
    _, node1, node2, total = report_lines(report)
    assert "1/2^64-2" in node1 and "0/2^64-2" in node2 and "1/2^65-4" in total and total.endswith("ok")
    assert not any(
        "18446744073709551614" in line or "36893488147419103228" in line for line in (node1, total)
    )
    entry = json.loads(json.dumps(report))["pools"]["default/IPv6"]  # -o json: exact integers
    assert entry["capacity"] == 36893488147419103228 and entry["nodes"]["node1"]["capacity"] == V6


@pytest.mark.parametrize(
    ("pools", "line"),
    [
        (
            [{"pool": "default", "family": 4, "cidrs": ["10.244.1.0/24"], "used": 5, "capacity": 253}],
            "IPv4: 5/253 allocated from 10.244.1.0/24 [cluster-pool]",
        ),
        (
            [
                {
                    "pool": "default",
                    "family": 6,
                    "cidrs": ["fd00:10:244:1::/64"],
                    "used": 1,
                    "capacity": (1 << 64) - 2,
                }
            ],
            "IPv6: 1/2^64-2 allocated from fd00:10:244:1::/64 [cluster-pool]",
        ),
        (
            [
                {"pool": "a", "family": 6, "cidrs": ["fd00::/64"], "used": 1, "capacity": V6},
                {"pool": "b", "family": 6, "cidrs": ["fd01::/64"], "used": 0, "capacity": V6},
            ],
            "IPv6: 1/2^65-4 allocated from 2 IPAM pool(s): a 1/2^64-2 from fd00::/64; "
            "b 0/2^64-2 from fd01::/64 [cluster-pool]",
        ),
    ],
)
def test_status_ipam_line(pools: list[dict[str, Any]], line: str) -> None:
    assert ipam_line({"mode": "cluster-pool", "pools": pools}) == line


# ---- each mode says when its node is exhausted, and why -------------------------------------------


def test_crd_node_exhausted_says_how_full_its_pool_is() -> None:
    alloc = CrdAllocator("node1")
    ((empty),) = alloc.usage()
    assert empty.exhausted and "podnetnode node1 spec.ipam.pool has no IPv4 address" in empty.error
    alloc.set_pool({addr("10.244.1.1"), addr("10.244.1.2"), addr("10.244.1.3"), addr("10.244.1.4")}, {})
    alloc.allocate("c0/eth0")
    (room,) = alloc.usage()
    assert (room.used, room.capacity, room.exhausted, room.error) == (1, 3, False, "")
    alloc.allocate("c1/eth0")
    alloc.allocate("c2/eth0")
    (full,) = alloc.usage()
    assert (full.used, full.capacity, full.exhausted) == (3, 3, True)
    assert full.error == (
        "exhausted: all 4 addresses of podnetnode node1 spec.ipam.pool (10.244.1.1/32, 10.244.1.2/31, "
        "10.244.1.4/32) in use, 1 of them as the node's router IP; add addresses to the pool"
    )
    assert full.to_json()["exhausted"] is True
    alloc.release("c1/eth0")
    assert not alloc.usage()[0].exhausted


def test_cluster_pool_node_exhausted_when_its_cidrs_are_full() -> None:
    alloc = MultiCIDRAllocator([net("10.244.1.0/30"), net("fd00:1::/64")])
    (v4, v6) = alloc.usage()
    assert not v4.exhausted and not v6.exhausted and v6.capacity == (1 << 64) - 2
    alloc.allocate("c0/eth0")  # a /30 holds one pod
    (v4, v6) = alloc.usage()
    assert v4.exhausted and v4.error.startswith("exhausted: all 1 addresses of 10.244.1.0/30 in use")
    assert not v6.exhausted and not v6.error


def test_multi_pool_node_exhausted_only_when_full_and_the_pool_gives_no_more() -> None:
    small = parse_pool("small", {"ipv4": {"cidrs": ["10.251.0.0/29"], "maskSize": 29}})
    alloc = MultiPoolAllocator("n1", (), None, wait=0.1)  # type: ignore[arg-type]
    alloc.set_state({"small": [net("10.251.0.0/29")]}, {}, {"small": small})
    for i in range(5):
        alloc.allocate(f"c{i}/eth0", PodRef("default", f"p{i}", (("ipam.podnet.io/ip-pool", "small"),)))
    (full,) = alloc.usage()
    assert full.used == full.capacity and not full.exhausted  # the operator may carve another
    alloc.set_state({"small": [net("10.251.0.0/29")]}, {"small": POOL_DRY}, {"small": small})
    (dry,) = alloc.usage()
    assert dry.exhausted and dry.error == POOL_DRY
