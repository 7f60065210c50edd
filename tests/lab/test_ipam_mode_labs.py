"""IPAM modes crd and multi-pool on the lab's real API server (issue 14): where each pod's address
comes from, what the PodnetNode records, the errors a user sees when a pool runs dry, and that pods
of different pools reach each other natively (one L2, BGP across subnets) and through the tunnel."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from itertools import permutations
from typing import Any

import pytest
from labhelpers import PODNET, podnet_json, sh, wait_for
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from podnet.kube.client import connect
from podnet.kube.resources import PodnetIPPool, PodnetNode
from podnet.lab import cluster as cl
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import KubeNamespace, Pod, Topology, load_topology
from podnet.verify.probe import tcp_probe

pytestmark = pytest.mark.lab

POOL = "ipam.podnet.io/ip-pool"
CILIUM_POOL = "ipam.cilium.io/ip-pool"
BLUE = ipaddress.ip_network("10.250.0.0/16")
POOLS = json.dumps(
    {
        "default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}},
        "blue": {"ipv4": {"cidrs": [str(BLUE)], "maskSize": 27}},
    }
)


def _ips(topo: Topology) -> dict[str, str]:
    state = st.LabState.load(topo.name)
    assert state is not None
    return {name: info["ips"][0] for name, info in state.info["podIPs"].items()}


def _all_reach(topo: Topology, names: list[str]) -> None:
    """Each pod reaches each other by its own address. A CIDR given a moment ago reaches the peers
    with the node's next record (etcd) or at once (Kubernetes): a probe may wait for it a while."""
    ips = _ips(topo)
    for a, b in permutations(names, 2):
        res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b])
        deadline = time.monotonic() + 10
        while not res.ok and time.monotonic() < deadline:
            time.sleep(0.2)
            res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b])
        assert res.ok, f"{a} -> {b} ({ips[b]}): {res.detail}"
        assert ips[a] in res.detail, f"{b} should see {a}'s own address (no SNAT between pools): {res.detail}"


def _add_pod(topo: Topology, pod: Pod) -> str:
    state = st.LabState.load(topo.name)
    assert state is not None
    cl.ensure_pod(topo, state, pod)
    return _ips(topo)[pod.name]


def _node(admin: Any, name: str) -> Any:
    return admin.get(PodnetNode, name)


# ---- crd ---------------------------------------------------------------------------------------


def test_crd_mode_hands_out_only_the_pool_and_records_owners(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["datastore=kubernetes", "ipam.mode=crd"]))
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    ips = _ips(topo)
    for node in topo.nodes:
        mine = {n: ip for n, ip in ips.items() if n.startswith(f"{node.name}-")}
        owners = {ip: f"default/{n}" for n, ip in mine.items()}

        def recorded(name: str = node.name, owners: dict[str, str] = owners) -> bool:
            used = _node(admin, name).status["ipam"]["used"]  # written by the agent after each ADD
            return {ip: u["owner"] for ip, u in used.items() if u["owner"] != "router"} == owners

        wait_for(recorded, f"{node.name}'s PodnetNode to record its pods' owners", 20)
        obj = _node(admin, node.name)
        pool, used = obj.spec["ipam"]["pool"], obj.status["ipam"]["used"]
        assert mine and all(ip in pool for ip in mine.values())
        assert list(u["owner"] for u in used.values()).count("router") == 1
    # an empty pool: the ADD fails naming the node and the pool, then works once an address is added
    node1 = _node(admin, "node1")
    in_use = set(node1.status["ipam"]["used"])
    emptied = {ip: None for ip in node1.spec["ipam"]["pool"] if ip not in in_use}
    admin.patch(PodnetNode, "node1", {"spec": {"ipam": {"pool": emptied}}}, patch_type=PatchType.MERGE)
    wait_for(lambda: _free(topo, "node1") == 0, "node1 to see its emptied pool")
    with pytest.raises(cl.ClusterError, match=r"code 100.*node node1.*podnetnode node1 spec.ipam.pool"):
        _add_pod(topo, Pod("late", "node1"))
    # podnet ipam says so (issue 29): node1's ERROR column says why, the total row names node1
    crd = podnet_json("ipam", "--lab", topo.name, "-o", "json")["pools"]["crd/IPv4"]
    assert crd["exhausted"] and crd["exhaustedNodes"] == ["node1"] and crd["nodes"]["node1"]["exhausted"]
    table = subprocess.run([PODNET, "ipam", "--lab", topo.name], capture_output=True, text=True, check=True)
    rows = table.stdout.split("\n\n")[0].splitlines()  # the pools, not the failed starts below
    (row,) = [r for r in rows if " node1 " in r]
    why = r"exhausted: all \d+ addresses of podnetnode node1 spec.ipam.pool \(.*\) in use"
    assert re.search(why, row), row
    assert "add addresses to the pool" in row
    assert any(r.split()[:1] == ["total"] and r.endswith("EXHAUSTED on node1") for r in rows), table.stdout
    admin.patch(
        PodnetNode, "node1", {"spec": {"ipam": {"pool": {"10.244.0.200": {}}}}}, patch_type=PatchType.MERGE
    )
    wait_for(lambda: _free(topo, "node1") == 1, "node1 to see the added address")
    assert _add_pod(topo, Pod("late", "node1")) == "10.244.0.200"
    wait_for(
        lambda: (
            _node(admin, "node1").status["ipam"]["used"].get("10.244.0.200", {}).get("owner")
            == "default/late"
        ),
        "status.ipam.used to name the new pod",
    )
    # an address in use taken out of the pool: the pod keeps working, status says so
    gone = ips["node1-p1"]
    admin.patch(PodnetNode, "node1", {"spec": {"ipam": {"pool": {gone: None}}}}, patch_type=PatchType.MERGE)
    wait_for(lambda: any(gone in e for e in _errors(topo, "node1")), "the removed address to be reported")
    _all_reach(topo, ["node1-p1", "late", "node2-p1", "node3-p1"])


def _status(topo: Topology, node: str) -> dict[str, Any]:
    return podnet_json("status", "--lab", topo.name, "--node", node, "-o", "json")["nodes"][node]  # type: ignore[no-any-return]


def _free(topo: Topology, node: str) -> int:
    pools = _status(topo, node)["ipam"]["pools"]
    return sum(p["capacity"] - p["used"] for p in pools)


def _errors(topo: Topology, node: str) -> list[str]:
    return list(_status(topo, node)["agent"]["errors"])


# ---- multi-pool --------------------------------------------------------------------------------


def _multi_pool_topo(example: str, overrides: list[str]) -> Topology:
    base = apply_overrides(
        load_topology(example),
        [
            "datastore=kubernetes",
            "ipam.mode=multi-pool",
            f"ipam.operator.autoCreatePodIPPools={POOLS}",
            *overrides,
        ],
    )
    nodes = [n.name for n in base.nodes]
    pods = (
        Pod("plain", nodes[0]),  # neither annotated: default
        Pod("blue-pod", nodes[1], annotations={CILIUM_POOL: "blue"}),  # Cilium's annotation name
        Pod("ns-pod", nodes[-1], namespace="team-b"),  # its namespace's annotation
        Pod("own-pod", nodes[-1], namespace="team-b", annotations={POOL: "default"}),  # the pod's wins
    )
    return dataclasses.replace(
        base, pods=pods, namespaces=(KubeNamespace("team-b", annotations={POOL: "blue"}),)
    )


@pytest.mark.parametrize(
    ("example", "overrides"),
    [
        ("l2", []),  # native, autoDirectNodeRoutes
        ("l2", ["routingMode=tunnel", "autoDirectNodeRoutes=false"]),
        ("two-subnets", ["routingMode=native", "bgp.enabled=true"]),
    ],
    ids=["l2-native", "l2-tunnel", "two-subnets-bgp"],
)
def test_multi_pool_picks_the_pool_and_pools_reach_each_other(
    lab_up: Callable[..., Topology], example: str, overrides: list[str]
) -> None:
    topo = lab_up(_multi_pool_topo(example, overrides))
    ips = {n: ipaddress.ip_address(ip) for n, ip in _ips(topo).items()}
    default = ipaddress.ip_network("10.244.0.0/16")
    assert ips["plain"] in default and ips["own-pod"] in default
    assert ips["blue-pod"] in BLUE and ips["ns-pod"] in BLUE
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    in_default = {
        n.name: sum(1 for p in topo.pods if p.node == n.name and ips[p.name] in default) for n in topo.nodes
    }
    for node in topo.nodes:  # every node asks for the default pool up front: roundUp(inUse + 8, 8)
        needed = -(-(in_default[node.name] + 8) // 8) * 8
        wanted = {"pool": "default", "needed": {"ipv4-addrs": needed}}
        wait_for(  # the request follows an ADD within 50 ms (WRITE_DELAY)
            lambda n=node.name, w=wanted: w in _node(admin, n).spec["ipam"]["pools"]["requested"],
            f"{node.name} to ask for {needed} default addresses",
        )
    blue = admin.get(PodnetIPPool, "blue")  # the operator reports which nodes hold its CIDRs
    assert set(blue.status["nodes"]) == {topo.nodes[1].name, topo.nodes[-1].name}
    _all_reach(topo, ["plain", "blue-pod", "ns-pod", "own-pod"])
    node = topo.nodes[1].name
    on_blue = sum(1 for p in topo.pods if p.node == node and ips[p.name] in BLUE)
    pools = {p["pool"]: p for p in _status(topo, node)["ipam"]["pools"]}
    assert pools["blue"]["used"] == on_blue and pools["blue"]["cidrs"] and not pools["blue"]["error"]


def test_multi_pool_grows_by_the_formula_and_names_an_exhausted_pool(lab_up: Callable[..., Topology]) -> None:
    """A pool of four /29s (5 pod addresses each) with preAlloc 2, which every node asks for up
    front: node1 asks for roundUp(inUse + pending + 2, 2), gets a second /29 when the first runs
    short, and the ADD that finds the pool exhausted fails with code 100 naming the pool. An
    overlapping pool is refused, and an operator killed with SIGKILL loses nothing."""
    pools = json.dumps(
        {
            "default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}},
            "small": {"ipv4": {"cidrs": ["10.251.0.0/27"], "maskSize": 29}},
        }
    )
    base = apply_overrides(
        load_topology("l2"),
        [
            "datastore=kubernetes",
            "ipam.mode=multi-pool",
            f"ipam.operator.autoCreatePodIPPools={pools}",
            "ipam.multiPoolPreAllocation=default=8,small=2",
        ],
    )
    topo = lab_up(dataclasses.replace(base, pods=(Pod("p0", "node1"),)))
    admin = connect(kubeapi.kubeconfig_path(topo.name))

    def requested(pool: str) -> int:
        entries = _node(admin, "node1").spec["ipam"]["pools"]["requested"]
        return int(next(e["needed"]["ipv4-addrs"] for e in entries if e["pool"] == pool))

    def allocated(pool: str) -> list[str]:
        entries = _node(admin, "node1").spec["ipam"]["pools"].get("allocated") or []
        return next((list(e["cidrs"]) for e in entries if e["pool"] == pool), [])

    wait_for(lambda: requested("small") == 2 and len(allocated("small")) == 1, "the first CIDR")
    for i in range(1, 11):  # 10 pods fill two /29s
        ip = _add_pod(topo, Pod(f"s{i}", "node1", annotations={POOL: "small"}))
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.251.0.0/27")
        wait_for(lambda i=i: requested("small") == -(-(i + 2) // 2) * 2, f"needed = roundUp({i} + 2, 2)")
    assert len(allocated("small")) == 2  # the other two /29s are node2's and node3's
    with pytest.raises(cl.ClusterError, match=r"code 100.*IP pool 'small'.*exhausted"):
        _add_pod(topo, Pod("s11", "node1", annotations={POOL: "small"}))
    report = podnet_json("ipam", "--lab", topo.name, "-o", "json")
    assert report["pools"]["small/IPv4"]["exhausted"] and report["pools"]["small/IPv4"]["used"] == 10
    verdict = podnet_json("diagnose", "s11", "p0", "--lab", topo.name, "-o", "json", code=1)["verdict"]
    assert verdict["host"] == "node1" and "IP pool 'small'" in verdict["reason"]
    # the pool extended live: the same pod starts
    admin.patch(
        PodnetIPPool,
        "small",
        {"spec": {"ipv4": {"cidrs": ["10.251.0.0/27", "10.251.1.0/28"], "maskSize": 29}}},
        patch_type=PatchType.MERGE,
    )
    assert ipaddress.ip_address(_add_pod(topo, Pod("s11", "node1", annotations={POOL: "small"}))) in (
        ipaddress.ip_network("10.251.1.0/28")
    )
    with pytest.raises(cl.ClusterError, match=r"code 100.*no PodnetIPPool 'nosuch'"):
        _add_pod(topo, Pod("lost", "node1", annotations={POOL: "nosuch"}))
    # an overlapping pool is refused and says why; the older pool keeps working
    clash = PodnetIPPool(
        metadata=ObjectMeta(name="clash"), spec={"ipv4": {"cidrs": ["10.251.0.0/24"], "maskSize": 28}}
    )
    admin.create(clash)
    wait_for(
        lambda: (
            "overlaps 10.251.0.0/27 of pool small"
            in (admin.get(PodnetIPPool, "clash").status or {}).get("error", "")
        ),
        "the overlapping pool to be refused",
    )
    # the operator killed: nothing changes, and after a restart nothing is lost
    state = st.LabState.load(topo.name)
    assert state is not None
    operator = state.process("operator")
    assert operator is not None
    before = {n.name: _node(admin, n.name).spec["ipam"]["pools"]["allocated"] for n in topo.nodes}
    os.kill(operator.pid, signal.SIGKILL)
    wait_for(lambda: not operator.running(), "the operator to die")
    assert cl.ensure_operator(topo, state) == 1
    state.save()
    _add_pod(topo, Pod("after", "node2"))
    after = {n.name: _node(admin, n.name).spec["ipam"]["pools"]["allocated"] for n in topo.nodes}
    assert after == before
    _all_reach(topo, ["p0", "s1", "s10", "s11", "after"])


def test_multi_pool_on_etcd(lab_up: Callable[..., Topology]) -> None:
    """The same pools on the embedded etcd: pods pick theirs (the runtime names it in CNI_ARGS
    IP_POOL, there being no API server), pools reach each other, and an operator killed and
    restarted changes no node's CIDRs."""
    base = apply_overrides(
        load_topology("l2"), ["ipam.mode=multi-pool", f"ipam.operator.autoCreatePodIPPools={POOLS}"]
    )
    pods = (Pod("plain", "node1"), Pod("blue-pod", "node2", annotations={POOL: "blue"}))
    topo = lab_up(dataclasses.replace(base, pods=pods))
    ips = {n: ipaddress.ip_address(ip) for n, ip in _ips(topo).items()}
    assert ips["plain"] in ipaddress.ip_network("10.244.0.0/16") and ips["blue-pod"] in BLUE
    _all_reach(topo, ["plain", "blue-pod"])

    def cidrs() -> dict[str, dict[str, list[str]]]:
        report = podnet_json("ipam", "--lab", topo.name, "-o", "json")
        return {key: {n: u["cidrs"] for n, u in e["nodes"].items()} for key, e in report["pools"].items()}

    before = cidrs()
    assert before["blue/IPv4"]["node2"] and before["default/IPv4"]["node1"]
    state = st.LabState.load(topo.name)
    assert state is not None
    operator = state.process("operator")
    assert operator is not None
    os.kill(operator.pid, signal.SIGKILL)
    wait_for(lambda: not operator.running(), "the operator to die")
    assert cl.ensure_operator(topo, state) == 1
    _add_pod(topo, Pod("blue-2", "node1", annotations={CILIUM_POOL: "blue"}))
    after = cidrs()
    assert after["default/IPv4"] == before["default/IPv4"]
    assert after["blue/IPv4"]["node2"] == before["blue/IPv4"]["node2"] and after["blue/IPv4"]["node1"]
    _all_reach(topo, ["plain", "blue-pod", "blue-2"])


@pytest.mark.parametrize(
    "sets",
    [["datastore=kubernetes", "ipam.mode=crd"], ["ipam.mode=multi-pool"]],
    ids=["crd", "multi-pool-etcd"],
)
def test_agent_kill_9_in_a_growing_mode_keeps_addresses_router_ips_and_routes(
    lab_up: Callable[..., Topology], sets: list[str]
) -> None:
    """The modes whose addresses come and go while the agent runs restore exactly what they had:
    the pods' addresses, the node's router IPs (crd: recorded as used by owner router) and the
    peers' routes; pods talk while the agent is down."""
    topo = lab_up(apply_overrides(load_topology("l2"), sets))
    before = cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]
    routes = {n: _pod_routes(topo, n) for n in ("node1", "node2")}
    host_addrs = sh(topo, "node1", "ip", "-4", "-o", "addr", "show", "dev", "podnet_host")  # router IPs
    state = st.LabState.load(topo.name)
    assert state is not None
    agent = state.process("agent-node1")
    assert agent is not None
    os.kill(agent.pid, signal.SIGKILL)
    wait_for(lambda: not agent.running(), "agent-node1 to die")
    _all_reach(topo, ["node1-p1", "node2-p1"])
    bring_up_again(topo)
    after = cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]
    assert after["allocations"] == before["allocations"] and after["routerIPs"] == before["routerIPs"]
    assert sh(topo, "node1", "ip", "-4", "-o", "addr", "show", "dev", "podnet_host") == host_addrs
    assert {n: _pod_routes(topo, n) for n in ("node1", "node2")} == routes
    _all_reach(topo, ["node1-p1", "node1-p2", "node2-p1", "node3-p1"])


def _pod_routes(topo: Topology, node: str) -> str:
    return sh(topo, node, "ip", "route", "show", "proto", "201")


def bring_up_again(topo: Topology) -> None:
    from podnet.lab.run import bring_up

    assert bring_up(topo).changes >= 1  # the dead agent, started again
