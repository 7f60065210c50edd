"""Issue 2: every example comes up on the real kernel, routes across routers, and goes away cleanly."""

from __future__ import annotations

import dataclasses
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from podnet.lab import state as st
from podnet.lab.build import LabError
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.teardown import teardown_all
from podnet.lab.topology import Topology, load_topology, parse_topology
from podnet.util import netns
from podnet.verify.probe import ping, tcp_probe


def example(name: str) -> Topology:
    return load_topology(name)


pytestmark = pytest.mark.lab


def ns(topo: Topology, host: str) -> str:
    return st.ns_name(topo.name, host)


def ip_of(topo: Topology, host: str) -> str:
    return str(topo.host(host).primary.address.ip)


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


@pytest.mark.parametrize("name", ["l2", "two-subnets", "leaf-spine", "mixed"])
def test_example_comes_up_and_every_node_reaches_every_node(lab_up, name: str) -> None:
    topo = lab_up(example(name), cluster=False)
    for n in [*topo.nodes, topo.control_plane]:
        assert netns.exists(ns(topo, n.name))
    nodes = topo.nodes
    for a in nodes:
        for b in nodes:
            if a.name != b.name:
                res = tcp_probe(ns(topo, a.name), ns(topo, b.name), ip_of(topo, b.name))
                assert res.ok, f"{a.name} -> {b.name}: {res.detail}"
    state = st.LabState.load(topo.name)
    assert state is not None and state.status == "up"
    etcd = state.process("etcd")
    assert etcd is not None and etcd.running()


def test_two_subnets_routes_through_both_routers_but_not_to_pod_cidrs(lab_up) -> None:
    topo = lab_up(example("two-subnets"), cluster=False)
    node1, node2 = ns(topo, "node1"), ns(topo, "node2")
    res = tcp_probe(node1, node2, "172.16.3.2")
    assert res.ok, res.detail
    assert "172.16.2.2" in res.detail  # no NAT on the way: node2 sees node1's own address
    # two routers on the path: TTL 2 dies at R2, TTL 3 arrives
    assert not ping(node1, "172.16.3.2", ttl=2).ok
    assert ping(node1, "172.16.3.2", ttl=3).ok
    # the seeds' starting problem: the underlay knows no pod CIDR
    r1 = subprocess.run(
        ["ip", "netns", "exec", ns(topo, "r1"), "ip", "route", "get", "10.244.2.1"],
        capture_output=True,
        text=True,
    )
    assert r1.returncode != 0 and "unreachable" in r1.stderr.lower()
    assert not ping(node1, "10.244.2.1").ok


def test_state_keeps_the_effective_cluster_settings(lab_up) -> None:
    pairs = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
    topo = lab_up(apply_overrides(example("l2"), pairs), cluster=False)
    state = st.LabState.load(topo.name)
    assert state is not None
    assert state.info["cluster"] == topo.cluster
    assert state.info["cluster"]["routingMode"] == "tunnel"  # the override, not the file's native


def test_second_up_is_a_no_op(lab_up) -> None:
    topo = lab_up(example("two-subnets"), cluster=False)
    pid = st.LabState.load(topo.name).process("etcd").pid  # type: ignore[union-attr]
    report = bring_up(topo, cluster=False)
    assert report.changes == 0
    assert st.LabState.load(topo.name).process("etcd").pid == pid  # type: ignore[union-attr]


def test_up_of_another_topology_under_a_running_name_is_refused(lab_up) -> None:
    topo = lab_up(example("l2"), cluster=False)
    other = dataclasses.replace(example("two-subnets"), name=topo.name)
    with pytest.raises(LabError, match="lab down"):
        bring_up(other, cluster=False)


def unique(name: str) -> str:
    """A lab name no one else uses (tests never take a fixed name someone may have up)."""
    return f"{name}-{secrets.token_hex(3)}"


def test_down_leaves_no_namespace_link_process_or_file() -> None:
    links_before = root_links()
    topo = dataclasses.replace(example("two-subnets"), name=unique("tdown"))
    try:
        bring_up(topo, cluster=False)
        state = st.LabState.load(topo.name)
        assert state is not None
        pids = [p.pid for p in state.processes]
        namespaces = list(state.namespaces)
        bring_down(topo.name)
        assert not [n for n in netns.listed() if n in namespaces or n.startswith(ns(topo, ""))]
        assert not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in pids)
        assert not st.lab_dir(topo.name).exists()
        assert root_links() == links_before
    finally:
        bring_down(topo.name)  # twice is fine


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_failed_up_removes_what_it_made(monkeypatch) -> None:
    import podnet.lab.run as run

    def broken(*_args: object, **_kw: object) -> int:
        raise RuntimeError("injected failure after the underlay was built")

    monkeypatch.setattr(run, "ensure_control_plane", broken)
    topo = dataclasses.replace(example("l2"), name=unique("tfail"))
    try:
        with pytest.raises(RuntimeError, match="injected"):
            bring_up(topo, cluster=False)
        assert netns.listed(ns(topo, "")) == []
        assert not st.lab_dir(topo.name).exists()
    finally:
        bring_down(topo.name)


def test_down_finds_leftovers_of_a_crashed_run_without_state() -> None:
    topo = dataclasses.replace(example("l2"), name=unique("tcrash"))
    try:
        bring_up(topo, cluster=False)
        st.remove_lab_dir(topo.name)  # the crash lost the state; namespaces and etcd remain
        assert netns.listed(ns(topo, ""))
        report = bring_down(topo.name)
        assert report.namespaces
        assert netns.listed(ns(topo, "")) == []
    finally:
        bring_down(topo.name)


def test_down_all_removes_orphan_namespaces_by_prefix() -> None:
    # a prefix of its own: `lab down --all` itself would also take labs other people have up
    prefix = f"{st.NS_PREFIX}torph{secrets.token_hex(3)}-"
    orphan, bystander = f"{prefix}x", f"{st.NS_PREFIX}tkeep{secrets.token_hex(3)}-x"
    netns.create(orphan)
    netns.create(bystander)
    try:
        reports = teardown_all(prefix=prefix)
        assert not netns.exists(orphan)
        assert netns.exists(bystander)  # outside the prefix: untouched
        assert [r.namespaces for r in reports if r.lab == "(no state)"] == [[orphan]]
    finally:
        netns.remove(orphan)
        netns.remove(bystander)


def test_bad_topology_file_fails_before_anything_exists(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        Path(load_topology("two-subnets").source)
        .read_text()
        .replace("address: 172.16.3.2, gateway", "address: 172.16.2.2, gateway")
    )
    before = netns.listed(st.ns_name("two-subnets", ""))  # this lab's: other labs may run meanwhile
    dir_before = st.lab_dir("two-subnets").exists()
    res = subprocess.run(
        [".venv/bin/podnet", "lab", "up", str(bad)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 2
    assert "nodes[1].address: 172.16.2.2 is outside network net2" in res.stderr
    assert netns.listed(st.ns_name("two-subnets", "")) == before
    assert st.lab_dir("two-subnets").exists() == dir_before  # no state made (or removed) either


def _one_node_lab(name: str, node: str) -> Topology:
    return parse_topology(
        {
            "name": name,
            "networks": [{"name": "lan", "cidr": "192.168.7.0/24"}],
            "nodes": [{"name": node, "network": "lan", "address": "192.168.7.10"}],
        }
    )


def test_labs_whose_namespace_names_collide_do_not_touch_each_other() -> None:
    """Lab A's host ``n-node1`` and lab ``A-n``'s host ``node1`` are both ``pn-A-n-node1``."""
    a = f"tc{secrets.token_hex(3)}"
    first, second = _one_node_lab(f"{a}-n", "node1"), _one_node_lab(a, "n-node1")
    shared = st.ns_name(first.name, "node1")
    assert shared == st.ns_name(second.name, "n-node1")
    root = Path(__file__).resolve().parents[2]
    try:
        bring_up(first, cluster=False)
        expected = f"namespace {shared} already exists (lab {first.name}?)"
        with pytest.raises(LabError, match=re.escape(expected)):
            bring_up(second, cluster=False)
        assert netns.exists(shared), "the refused lab up removed the other lab's namespace"
        assert st.LabState.load(second.name) is None  # the refused lab left no state either
        # down without a state of its own: the prefix pn-A- also fits lab A-n, whose state keeps it
        bring_down(second.name)
        assert netns.exists(shared), "lab down of a lab without state took another lab's namespace"
        res = subprocess.run(
            [".venv/bin/podnet", "lab", "down", second.name], capture_output=True, text=True, cwd=root
        )
        assert res.returncode == 1 and f"no lab named {second.name}" in res.stderr, res.stderr
        assert netns.exists(shared)
    finally:
        bring_down(second.name)
        bring_down(first.name)
    assert not netns.exists(shared)


def test_down_with_a_corrupt_state_finds_the_namespaces_by_prefix() -> None:
    topo = dataclasses.replace(example("l2"), name=unique("tcorr"))
    try:
        bring_up(topo, cluster=False)
        (st.lab_dir(topo.name) / "state.json").write_text("{ not json")
        assert st.LabState.load(topo.name) is None
        report = bring_down(topo.name)
        assert ns(topo, "node1") in report.namespaces
        assert netns.listed(ns(topo, "")) == []
        assert not st.lab_dir(topo.name).exists()
    finally:
        bring_down(topo.name)


def test_down_of_an_unknown_lab_says_so() -> None:
    res = subprocess.run(
        [".venv/bin/podnet", "lab", "down", unique("tnone")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 1
    assert "no lab named tnone-" in res.stderr and "(podnet lab list)" in res.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("clusterPoolIPv4PodCIDRList: [10.244.0.0/16]", "clusterPoolIPv4PodCIDRList: [172.16.0.0/16]"),
            "clusterPoolIPv4PodCIDRList: pod CIDR 172.16.0.0/16 overlaps network net1",
        ),
        (("  - {name: node1, network: net1,", "  - {name: node1, network: net1, name: node9,"),
         "duplicate key 'name'"),
    ],
    ids=["pool-over-underlay", "duplicate-key"],
)  # fmt: skip
def test_lab_up_refuses_pools_over_the_underlay_and_duplicate_keys(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    text = Path(load_topology("two-subnets").source).read_text()
    assert edit[0] in text, f"the example changed: {edit[0]!r} not found"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(edit[0], edit[1]))
    before = netns.listed(st.ns_name("two-subnets", ""))  # this lab's: other labs may run meanwhile
    res = subprocess.run(
        [".venv/bin/podnet", "lab", "up", str(bad)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert netns.listed(st.ns_name("two-subnets", "")) == before
