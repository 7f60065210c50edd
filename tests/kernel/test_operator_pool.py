"""The cluster-pool operator against a real etcd: requests, races, return, reclaim, exhaustion."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from podnet.ipam.base import IPAMContext, new_allocator
from podnet.ipam.cidr import parse_pool_spec
from podnet.model import NodeInfo
from podnet.operator.cluster_pool import ClusterPoolOperator, run_operator
from podnet.store import keys
from podnet.store.client import Store
from podnet.store.datastore import EtcdDatastore
from podnet.store.nodes import (
    NodeRecord,
    get_pod_cidrs,
    operator_status,
    put_nodestate,
    register_node,
    wait_for_pod_cidrs,
)
from podnet.store.operatorstate import EtcdOperatorState
from podnet.store.server import EtcdProcess

pytestmark = pytest.mark.kernel
net = ipaddress.ip_network


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def put_node(store: Store, name: str, *requested: str) -> None:
    record = NodeRecord(NodeInfo(name, ipaddress.IPv4Address("172.16.0.1")), tuple(net(r) for r in requested))
    store.put(keys.node_key(name), json.dumps(record.to_json()))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def assert_consistent(store: Store) -> dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """Every allocation key matches the node's podcidrs index; returns node -> CIDRs."""
    by_node: dict[str, list] = {}
    for cidr, owner in EtcdOperatorState(store).snapshot().pod_cidrs.items():
        by_node.setdefault(owner, []).append(cidr)
    kvs, _ = store.list_prefix(keys.PODCIDRS_PREFIX)
    indexed = [keys.name_from_key(keys.PODCIDRS_PREFIX, kv.key) for kv in kvs]
    index = {name: get_pod_cidrs(store, name) for name in indexed}
    assert {n: tuple(sorted(c)) for n, c in by_node.items()} == {
        n: tuple(sorted(c)) for n, c in index.items()
    }
    return index


def test_lab_requests_are_honoured(store: Store) -> None:
    put_node(store, "node1", "10.244.1.0/24")
    put_node(store, "node2", "10.244.2.0/24")
    put_node(store, "node3", "10.244.1.0/24")  # conflicts with node1: gets another one
    put_node(store, "node0")
    ClusterPoolOperator(EtcdOperatorState(store), parse_pool_spec(["10.244.0.0/16"], 24), 60).reconcile_once()
    assert assert_consistent(store) == {
        "node0": (net("10.244.0.0/24"),),
        "node1": (net("10.244.1.0/24"),),
        "node2": (net("10.244.2.0/24"),),
        "node3": (net("10.244.3.0/24"),),
    }
    status = operator_status(store)
    assert status is not None and status["state"] == "ok" and status["allocated"] == 4


def test_two_operators_racing_never_double_allocate(etcd: EtcdProcess) -> None:
    """Three operators reconcile in a loop while 40 nodes register, so their snapshots differ."""
    spec = parse_pool_spec(["10.50.0.0/20"], 26)  # 64 subnets for 40 nodes
    done = threading.Event()
    errors: list[BaseException] = []

    def operator() -> None:
        try:
            with Store(etcd.endpoint) as own:
                op = ClusterPoolOperator(EtcdOperatorState(own), spec, 60)
                while not done.is_set():
                    op.reconcile_once()
                op.reconcile_once()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=operator) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with Store(etcd.endpoint) as store:
            names = [f"n{i:02d}" for i in range(40)]
            random.Random(7).shuffle(names)  # late names sorting first make the operators' plans differ
            for name in names:
                put_node(store, name)
                time.sleep(0.01)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    assert not errors
    with Store(etcd.endpoint) as store:
        index = assert_consistent(store)
    assert sorted(index) == [f"n{i:02d}" for i in range(40)]
    assert all(len(c) == 1 for c in index.values())  # nobody got two
    assert len({c[0] for c in index.values()}) == 40  # no CIDR given twice


def test_running_operators_serve_nodes_as_they_register(etcd: EtcdProcess) -> None:
    stop = threading.Event()
    ops = [
        threading.Thread(target=run_operator, args=(Store(etcd.endpoint), ["10.60.0.0/16"], 24, 60, stop))
        for _ in range(2)
    ]
    for t in ops:
        t.start()
    regs = []
    try:
        with Store(etcd.endpoint) as store:
            for i in range(12):
                info = NodeInfo(f"r{i}", ipaddress.IPv4Address("172.16.0.1"))
                regs.append(register_node(store, info, ttl=10))
            got = {f"r{i}": wait_for_pod_cidrs(store, f"r{i}", timeout=15) for i in range(12)}
            assert_consistent(store)
    finally:
        stop.set()
        for t in ops:
            t.join(timeout=10)
        for reg in regs:
            reg.close()
    assert len({c for cidrs in got.values() for c in cidrs}) == 12
    assert not any(t.is_alive() for t in ops)


def test_node_that_comes_back_gets_its_cidr(store: Store) -> None:
    clock = Clock()
    op = ClusterPoolOperator(EtcdOperatorState(store), parse_pool_spec(["10.244.0.0/16"], 24), 60, clock)
    for name in ("a", "b", "c"):
        put_node(store, name)
    op.reconcile_once()
    before = get_pod_cidrs(store, "b")
    store.delete(keys.node_key("b"))
    clock.now += 30
    op.reconcile_once()
    assert store.get(keys.node_gone_key("b")) is not None
    put_node(store, "d")
    put_node(store, "b", "10.244.200.0/24")  # a new request does not move an existing allocation
    clock.now += 20
    op.reconcile_once()
    assert get_pod_cidrs(store, "b") == before
    assert get_pod_cidrs(store, "d") != before
    assert store.get(keys.node_gone_key("b")) is None  # marker cleared


def test_reclaim_after_grace_survives_operator_restart(store: Store) -> None:
    clock = Clock()
    spec = parse_pool_spec(["10.70.0.0/23"], 24)
    put_node(store, "old")
    ClusterPoolOperator(EtcdOperatorState(store), spec, 10, clock).reconcile_once()
    (cidr,) = get_pod_cidrs(store, "old")
    store.delete(keys.node_key("old"))
    ClusterPoolOperator(EtcdOperatorState(store), spec, 10, clock).reconcile_once()  # marks it gone
    clock.now += 9.5
    # a new process: no memory of the marker
    restarted = ClusterPoolOperator(EtcdOperatorState(store), spec, 10, clock)
    restarted.reconcile_once()
    assert get_pod_cidrs(store, "old") == (cidr,)
    clock.now += 1.0
    restarted.reconcile_once()
    assert get_pod_cidrs(store, "old") == ()
    assert store.get(keys.cluster_pool_key(cidr)) is None
    assert store.get(keys.node_gone_key("old")) is None
    put_node(store, "new", str(cidr))
    restarted.reconcile_once()
    assert get_pod_cidrs(store, "new") == (cidr,)


def test_reclaim_with_real_time_and_lease_expiry(store: Store) -> None:
    stop = threading.Event()
    op = threading.Thread(target=run_operator, args=(store.clone(), ["10.80.0.0/16"], 24, 1.0, stop))
    op.start()
    try:
        reg = register_node(
            store, NodeInfo("short", ipaddress.IPv4Address("172.16.0.1")), ttl=2, interval=0.5
        )
        (cidr,) = wait_for_pod_cidrs(store, "short", timeout=10)
        reg.close(revoke=False)  # the node dies: its lease expires, then the grace runs out
        assert wait_until(lambda: store.get(keys.cluster_pool_key(cidr)) is None, timeout=20)
        assert get_pod_cidrs(store, "short") == ()
    finally:
        stop.set()
        op.join(timeout=10)


def test_exhaustion_is_reported(store: Store) -> None:
    for name in ("x1", "x2", "x3"):
        put_node(store, name)
    ClusterPoolOperator(EtcdOperatorState(store), parse_pool_spec(["10.90.0.0/23"], 24), 60).reconcile_once()
    assert get_pod_cidrs(store, "x3") == ()
    status = operator_status(store)
    assert status is not None and status["state"] == "exhausted"
    assert "all 2 node subnets of 10.90.0.0/23 split into /24 are allocated" in status["message"]
    assert status["waitingNodes"] == ["x3"]
    with pytest.raises(
        TimeoutError, match=r"node x3 got no pod CIDR within 0\.3s: operator reports exhausted"
    ):
        wait_for_pod_cidrs(store, "x3", timeout=0.3)


def test_cluster_pool_allocator_for_the_agent(store: Store) -> None:
    put_node(store, "agent", "10.244.7.0/24")
    ClusterPoolOperator(EtcdOperatorState(store), parse_pool_spec(["10.244.0.0/16"], 24), 60).reconcile_once()
    alloc = new_allocator("cluster-pool", IPAMContext(EtcdDatastore(store), "agent", wait_timeout=5))
    (first,) = alloc.allocate("container-1/eth0")
    assert (str(first.ip), str(first.gateway), str(first.cidr)) == (
        "10.244.7.2",
        "10.244.7.1",
        "10.244.7.0/24",
    )


def test_operator_command_runs_and_stops_on_sigterm(etcd: EtcdProcess, store: Store) -> None:
    cmd = [sys.executable, "-m", "podnet.operator", "--etcd-endpoints", etcd.endpoint]
    cmd += [
        "--cluster-pool-ipv4-cidr",
        "10.244.0.0/16",
        "--cluster-pool-ipv4-mask-size",
        "24",
        "--grace-period",
        "5",
    ]
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        put_node(store, "node2", "10.244.2.0/24")
        assert wait_for_pod_cidrs(store, "node2", timeout=20) == (net("10.244.2.0/24"),)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    assert b"allocated pod CIDR 10.244.2.0/24 to node node2" in out


def test_a_gone_node_with_endpoints_is_fenced_and_a_reporting_one_is_never_reclaimed(store: Store) -> None:
    clock = Clock()
    spec = parse_pool_spec(["10.71.0.0/22"], 24)
    op = ClusterPoolOperator(EtcdOperatorState(store), spec, 10, clock, fence_seconds=600)
    put_node(store, "busy")
    put_node(store, "alive")
    op.reconcile_once()
    (busy_cidr,), (alive_cidr,) = get_pod_cidrs(store, "busy"), get_pod_cidrs(store, "alive")
    put_nodestate(store, "busy", endpoints=3, now=clock.now)
    store.delete(keys.node_key("busy"))  # both registrations vanish
    store.delete(keys.node_key("alive"))
    op.reconcile_once()  # marks both gone
    clock.now += 30  # past the grace period
    put_nodestate(store, "alive", endpoints=0, now=clock.now - 5)  # its agent still reports
    op.reconcile_once()
    assert get_pod_cidrs(store, "busy") == (busy_cidr,), "a node that had pods was reclaimed"
    assert get_pod_cidrs(store, "alive") == (alive_cidr,), "a node whose agent reports was reclaimed"
    status = operator_status(store)
    assert status is not None and {f["node"] for f in status["fenced"]} == {"busy", "alive"}
    put_node(store, "newcomer", str(busy_cidr))  # asks for the fenced CIDR: gets another one
    op.reconcile_once()
    assert get_pod_cidrs(store, "newcomer") not in ((busy_cidr,), (alive_cidr,), ())
    store.delete(keys.nodestate_key("busy"))  # the operator's way out: the node is known to be gone
    op.reconcile_once()
    assert get_pod_cidrs(store, "busy") == ()
    assert store.get(keys.cluster_pool_key(busy_cidr)) is None
    clock.now += 600  # the fence of a silent node lapses too
    op.reconcile_once()
    assert get_pod_cidrs(store, "alive") == ()


def test_a_stale_operator_status_says_how_old_it_is(store: Store) -> None:
    stale = {"state": "ok", "message": "4 of 512 node subnets allocated", "updated": time.time() - 120}
    store.put(keys.OPERATOR_STATUS_KEY, json.dumps({**stale, "heartbeat": 10.0}))
    put_node(store, "waiting")
    with pytest.raises(TimeoutError) as caught:
        wait_for_pod_cidrs(store, "waiting", timeout=0.3)
    text = str(caught.value)
    assert "last reported 120s ago and is not updating its status" in text
    assert "is `podnet operator` running?" in text and "4 of 512" in text
    fresh = {**stale, "updated": time.time()}
    store.put(keys.OPERATOR_STATUS_KEY, json.dumps({**fresh, "heartbeat": 10.0}))
    with pytest.raises(TimeoutError, match="operator reports ok: 4 of 512") as caught:
        wait_for_pod_cidrs(store, "waiting", timeout=0.3)
    assert "not updating" not in str(caught.value)


def test_a_running_operator_refreshes_its_status(store: Store) -> None:
    clock = Clock()
    op = ClusterPoolOperator(EtcdOperatorState(store), parse_pool_spec(["10.72.0.0/22"], 24), 10, clock)
    op.reconcile_once()
    first = operator_status(store)
    assert first is not None
    op.reconcile_once()  # nothing changed, too soon: not rewritten
    assert operator_status(store) == first
    clock.now += 11  # past the status heartbeat
    op.reconcile_once()
    again = operator_status(store)
    assert again is not None and again["updated"] == first["updated"] + 11
