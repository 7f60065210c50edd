"""The one multi-pool operator on a real etcd (``EtcdOperatorState``): requests met and reported,
racing operators, an agent changing its request under the operator, exhaustion, gone nodes and
a restarted operator. The same operator runs on Kubernetes in tests/lab/test_kubernetes_datastore.py."""

from __future__ import annotations

import ipaddress
import json
import threading
from typing import Any

import pytest

from podnet.ipam.host import pod_capacity
from podnet.model import NodeInfo
from podnet.operator.multi_pool import MultiPoolOperator
from podnet.store import keys
from podnet.store import multipool as mp
from podnet.store.client import Store
from podnet.store.nodes import NodeRecord, put_nodestate
from podnet.store.operatorstate import EtcdOperatorState
from podnet.store.server import EtcdProcess

pytestmark = pytest.mark.kernel

POOLS = {
    "default": {"ipv4": {"cidrs": ["10.10.0.0/22"], "maskSize": 26}},
    "wide": {"ipv4": {"cidrs": ["10.30.0.0/18"], "maskSize": 26}},
    "blue": {
        "ipv4": {"cidrs": ["10.20.0.0/24"], "maskSize": 26},
        "ipv6": {"cidrs": ["fd20::/112"], "maskSize": 120},
    },
}


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def register(store: Store, name: str) -> None:
    record = NodeRecord(NodeInfo(name, ipaddress.IPv4Address("172.16.0.1")))
    store.put(keys.node_key(name), json.dumps(record.to_json()))


def request(store: Store, name: str, pool: str, v4: int, v6: int = 0, release: tuple[str, ...] = ()) -> None:
    needed = {"ipv4-addrs": v4, **({"ipv6-addrs": v6} if v6 else {})}
    entry = {"pool": pool, "needed": needed, "release": list(release)}
    store.put(mp.REQUESTS + name, json.dumps({"requested": [entry]}))


def doc(store: Store, key: str) -> dict[str, Any]:
    kv = store.get(key)
    return json.loads(kv.value) if kv else {}


def allocated(store: Store, name: str) -> dict[str, list[str]]:
    return {e["pool"]: e["cidrs"] for e in doc(store, mp.ALLOCATIONS + name).get("allocated") or []}


def operator(store: Store, clock: Clock | None = None, grace: float = 10.0) -> MultiPoolOperator:
    return MultiPoolOperator(EtcdOperatorState(store), grace, clock or Clock(), auto_create=POOLS)


def test_requests_are_met_and_reported(store: Store) -> None:
    register(store, "n1")
    register(store, "n2")
    request(store, "n1", "default", 100)  # a /26 holds 61 pods: two
    request(store, "n2", "blue", 10, 10)
    operator(store).reconcile_once()
    assert allocated(store, "n1") == {"default": ["10.10.0.0/26", "10.10.0.64/26"]}
    assert allocated(store, "n2") == {"blue": ["10.20.0.0/26", "fd20::/120"]}
    assert doc(store, mp.POOL_STATUS + "default") == {
        "error": None,
        "nodes": {"n1": ["10.10.0.0/26", "10.10.0.64/26"]},
    }
    assert doc(store, mp.POOLS + "blue")["spec"] == POOLS["blue"]


def test_exhaustion_and_unknown_pool_are_told_to_the_node(store: Store) -> None:
    register(store, "big")
    register(store, "lost")
    request(store, "big", "blue", 500)  # blue's IPv4 holds four /26: 248 pods
    request(store, "lost", "green", 1)
    operator(store).reconcile_once()
    errors = doc(store, mp.ALLOCATIONS + "big")["errors"]
    assert "pool blue is exhausted" in errors["blue"] and "add CIDRs to the pool" in errors["blue"]
    assert len(allocated(store, "big")["blue"]) == 4
    assert "there is no PodnetIPPool 'green'" in doc(store, mp.ALLOCATIONS + "lost")["errors"]["green"]


def test_racing_operators_never_give_a_cidr_twice(etcd: EtcdProcess) -> None:
    """Three operators reconcile in a loop while 24 nodes register and grow their requests."""
    done = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with Store(etcd.endpoint) as own:
                op = operator(own)
                while not done.is_set():
                    op.reconcile_once()
                op.reconcile_once()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with Store(etcd.endpoint) as store:
            names = [f"n{i:02d}" for i in range(24)]
            for i, name in enumerate(names):
                register(store, name)
                request(store, name, "wide", 20 + i)
            for name in names[::3]:
                request(store, name, "wide", 80)  # grows while the operators run
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures
    with Store(etcd.endpoint) as store:
        operator(store).reconcile_once()
        held = {name: allocated(store, name).get("wide", []) for name in names}
    every = [c for cidrs in held.values() for c in cidrs]
    assert len(every) == len(set(every)), "a CIDR was given to two nodes"
    networks = [ipaddress.ip_network(c) for c in every]
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    for i, name in enumerate(names):
        want = 80 if i % 3 == 0 else 20 + i
        assert sum(pod_capacity(ipaddress.ip_network(c)) for c in held[name]) >= want, (name, held[name])


def test_a_request_changed_under_the_operator_is_planned_again(store: Store) -> None:
    """The write compares the request's revision: a stale plan loses and the next round sees the
    new request (a node giving a CIDR back)."""
    register(store, "n1")
    request(store, "n1", "default", 100)
    state = EtcdOperatorState(store)
    op = MultiPoolOperator(state, 10, Clock(), auto_create=POOLS)
    op.reconcile_once()
    assert allocated(store, "n1") == {"default": ["10.10.0.0/26", "10.10.0.64/26"]}
    stale = state.snapshot(pools=True)
    request(store, "n1", "default", 10, release=("10.10.0.64/26",))
    assert not state.set_node_pools(stale, "n1", [{"pool": "default", "cidrs": []}], {})
    op.reconcile_once()
    assert allocated(store, "n1") == {"default": ["10.10.0.0/26"]}
    assert doc(store, mp.POOL_STATUS + "default")["nodes"] == {"n1": ["10.10.0.0/26"]}


def test_gone_node_keeps_its_cidrs_for_the_grace_then_they_are_freed(store: Store) -> None:
    clock = Clock()
    register(store, "old")
    request(store, "old", "default", 10)
    operator(store, clock).reconcile_once()
    assert allocated(store, "old") == {"default": ["10.10.0.0/26"]}
    put_nodestate(store, "old", 0, clock.now)
    store.delete(keys.node_key("old"))
    clock.now += 1
    operator(store, clock).reconcile_once()  # marks it gone
    assert store.get(keys.node_gone_key("old")) is not None
    clock.now += 9.5
    restarted = operator(store, clock)  # a new process: everything comes from etcd
    restarted.reconcile_once()
    assert allocated(store, "old") == {"default": ["10.10.0.0/26"]}
    clock.now += 60  # past the grace, and the agent's last report is older than the grace
    restarted.reconcile_once()
    for key in (
        mp.ALLOCATIONS + "old",
        mp.REQUESTS + "old",
        keys.node_gone_key("old"),
        keys.nodestate_key("old"),
    ):
        assert store.get(key) is None, key
    register(store, "new")
    request(store, "new", "default", 10)
    restarted.reconcile_once()
    assert allocated(store, "new") == {"default": ["10.10.0.0/26"]}


def test_a_node_that_comes_back_keeps_what_it_had(store: Store) -> None:
    clock = Clock()
    register(store, "b")
    request(store, "b", "default", 10)
    operator(store, clock).reconcile_once()
    before = allocated(store, "b")
    store.delete(keys.node_key("b"))
    clock.now += 5
    operator(store, clock).reconcile_once()
    assert store.get(keys.node_gone_key("b")) is not None
    register(store, "b")
    clock.now += 30
    operator(store, clock).reconcile_once()
    assert store.get(keys.node_gone_key("b")) is None
    assert allocated(store, "b") == before
