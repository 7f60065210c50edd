"""The store against a real etcd 3.4: KV, CAS, leases, watches (also across an etcd restart)."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from podnet.model import NodeInfo
from podnet.store import keys
from podnet.store.client import LeaseKeeper, Store, StoreError
from podnet.store.nodes import NodeEvent, list_nodes, register_node, watch_nodes
from podnet.store.server import EtcdProcess, EtcdStartError, health, start_etcd
from podnet.store.watch import PrefixWatcher, WatchEvent

pytestmark = pytest.mark.kernel


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def node(name: str, ip: str = "172.16.0.1") -> NodeInfo:
    return NodeInfo(name, ipaddress.IPv4Address(ip))


def test_kv_prefix_and_cas(store: Store) -> None:
    store.put("/podnet/v1/t/a", "1")
    store.put("/podnet/v1/t/b", b"2")
    store.put("/podnet/v1/u", "elsewhere")
    kvs, revision = store.list_prefix("/podnet/v1/t/")
    assert [(kv.key, kv.value) for kv in kvs] == [("/podnet/v1/t/a", b"1"), ("/podnet/v1/t/b", b"2")]
    assert revision >= kvs[-1].mod_revision
    assert store.create("/podnet/v1/t/a", "x") is False
    assert store.create("/podnet/v1/t/c", "3") is True
    a = store.get("/podnet/v1/t/a")
    assert a is not None
    assert store.update("/podnet/v1/t/a", "new", a.mod_revision) is True
    assert store.update("/podnet/v1/t/a", "stale", a.mod_revision) is False
    assert store.get("/podnet/v1/t/a").value == b"new"  # type: ignore[union-attr]
    assert store.delete("/podnet/v1/t/a") is True
    assert store.delete("/podnet/v1/t/a") is False
    assert store.get("/podnet/v1/t/a") is None


def test_concurrent_creates_have_one_winner(etcd: EtcdProcess) -> None:
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def contender(i: int) -> None:
        with Store(etcd.endpoint) as own:
            barrier.wait(timeout=10)
            if own.create("/podnet/v1/race", f"c{i}"):
                wins.append(f"c{i}")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(wins) == 1
    with Store(etcd.endpoint) as s:
        assert s.get("/podnet/v1/race").text() == wins[0]  # type: ignore[union-attr]


def test_node_key_lives_on_lease_and_goes_when_it_expires(store: Store) -> None:
    reg = register_node(store, node("n1"), ttl=2, interval=0.5)
    try:
        time.sleep(3)  # longer than the TTL: the keepalive must hold it
        assert "n1" in list_nodes(store)
    finally:
        reg.close(revoke=False)  # stop keepalive only: etcd must expire it
    assert wait_until(lambda: store.get(keys.node_key("n1")) is None, timeout=15)


def test_revoke_removes_node_at_once(store: Store) -> None:
    reg = register_node(store, node("n2"), ttl=30)
    assert store.get(keys.node_key("n2")) is not None
    reg.close()
    assert store.get(keys.node_key("n2")) is None


def test_lost_lease_is_regranted_and_node_republished(store: Store) -> None:
    reg = register_node(store, node("n3"), ttl=5, interval=0.2)
    try:
        first = reg.lease_id
        store.revoke(first)  # as if etcd had expired it while we could not reach it
        assert wait_until(lambda: reg.lease_id != first and store.get(keys.node_key("n3")) is not None)
        kv = store.get(keys.node_key("n3"))
        assert kv is not None and kv.lease == reg.lease_id
    finally:
        reg.close()


def test_lease_keeper_on_plain_key(store: Store) -> None:
    keeper = LeaseKeeper(store, ttl=2, on_granted=lambda lease: store.put("/podnet/v1/l", "x", lease=lease))
    keeper.close()
    assert store.get("/podnet/v1/l") is None


def test_watch_nodes_sees_add_update_delete(store: Store) -> None:
    events: list[NodeEvent] = []
    store.put(keys.node_key("before"), '{"name": "before", "ipv4": "10.0.0.1"}')
    watcher = watch_nodes(store, events.append)
    try:
        assert wait_until(lambda: [e.name for e in events] == ["before"])
        reg = register_node(store, node("n4"), ttl=10)
        reg.update(reg._record.__class__(node("n4", "172.16.0.9")))
        assert wait_until(lambda: len(events) >= 3)
        reg.close()
        assert wait_until(lambda: len(events) >= 4)
    finally:
        watcher.stop()
    assert [(e.kind, e.name) for e in events] == [
        ("add", "before"),
        ("add", "n4"),
        ("update", "n4"),
        ("delete", "n4"),
    ]
    assert events[2].record is not None and str(events[2].record.node.ipv4) == "172.16.0.9"
    assert set(events[2].nodes) == {"before", "n4"}
    assert set(events[3].nodes) == {"before"}


def test_watch_survives_etcd_restart(tmp_path: Path, etcd: EtcdProcess, free_port: Callable[[], int]) -> None:
    seen: list[WatchEvent] = []
    with Store(etcd.endpoint) as s:
        s.put("/podnet/v1/w/a", "1")
    watcher = PrefixWatcher(Store(etcd.endpoint), "/podnet/v1/w/", seen.append, retry_interval=0.1).start()
    try:
        assert watcher.wait_synced(10)
        etcd.stop()
        peer = f"http://127.0.0.1:{free_port()}"
        again = start_etcd("pnt-etcd", etcd.data_dir, etcd.client_urls, peer, None, tmp_path / "etcd2.log")
        try:
            with Store(again.endpoint) as s:
                s.put("/podnet/v1/w/b", "2")
                s.delete("/podnet/v1/w/a")
            assert wait_until(lambda: len(seen) >= 3, timeout=15)
        finally:
            again.stop()
    finally:
        watcher.stop()
    assert [(e.kind, e.key) for e in seen] == [
        ("put", "/podnet/v1/w/a"),
        ("put", "/podnet/v1/w/b"),
        ("delete", "/podnet/v1/w/a"),
    ]


def test_etcd_in_a_namespace(netns_factory: Callable[[str], str], tmp_path: Path) -> None:
    ns = netns_factory("etcd")
    proc = start_etcd(
        "pnt-ns", tmp_path / "d", ["http://127.0.0.1:2379"], "http://127.0.0.1:2380", ns, tmp_path / "l"
    )
    try:
        assert proc.alive()
        assert health(proc.endpoint, ns)[0] is True
    finally:
        proc.stop()
    assert not proc.alive()


def test_start_failure_names_the_log(tmp_path: Path, free_port: Callable[[], int]) -> None:
    busy = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", busy))
    blocker.listen()
    try:
        with pytest.raises(EtcdStartError, match=re.escape(str(tmp_path / "fail.log"))):
            start_etcd(
                "pnt-fail", tmp_path / "d", [f"http://127.0.0.1:{busy}"], f"http://127.0.0.1:{free_port()}",
                None, tmp_path / "fail.log", timeout=5,
            )  # fmt: skip
    finally:
        blocker.close()


def test_a_dead_member_fails_over_to_a_live_one(etcd: EtcdProcess, free_port: Callable[[], int]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Store([dead, etcd.endpoint], timeout=2.0) as store:
        assert store.endpoint == dead
        store.put("/podnet/v1/test/failover", "x")
        assert store.endpoint == etcd.endpoint and store.health.ok
        assert store.clone().endpoint == etcd.endpoint  # a clone starts on the member that works
    with Store([dead], timeout=2.0) as nowhere:
        with pytest.raises(StoreError, match="failed on every endpoint"):
            nowhere.get("/podnet/v1/test/failover")
        health = nowhere.health
        assert not health.ok and health.failing_since and "127.0.0.1" in health.last_error
