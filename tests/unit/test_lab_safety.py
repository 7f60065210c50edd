"""Lab safety without root: names that collide, state files, PID reuse, the children's environment."""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from podnet.config import ConfigError, parse_pairs
from podnet.lab import state as st
from podnet.lab import teardown as td
from podnet.lab.topology import TopologyError, parse_topology
from podnet.util.proc import child_env

LAB: dict[str, Any] = {
    "name": "t",
    "networks": [{"name": "lan", "cidr": "192.168.1.0/24", "ipv6": "fd00:1::/64"}],
    "nodes": [{"name": "node1", "network": "lan", "address": "192.168.1.10"}],
}


def with_node(**fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(LAB)
    data["nodes"][0].update(fields)
    return data


# ---- topology ---------------------------------------------------------------------------------


def test_host_named_like_a_segment_namespace_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"'sw-lan' starts with 'sw-'"):
        parse_topology(with_node(name="sw-lan"))


@pytest.mark.parametrize("value", ["fd00:1::2", "fd00:1::2/64"])
def test_ipv6_address_with_or_without_prefix(value: str) -> None:
    topo = parse_topology(with_node(ipv6=value))
    assert str(topo.host("node1").primary.ipv6) == "fd00:1::2/64"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fd00:1::zz", r"nodes\[0\]\.ipv6: 'fd00:1::zz' is not an IPv6 address"),
        ("fd00:1::2/129", r"nodes\[0\]\.ipv6: 'fd00:1::2/129' is not an IPv6 address"),
        ("fd00:9::2", r"nodes\[0\]\.ipv6: fd00:9::2 is outside lan's fd00:1::/64"),
        ("fd00:1::2/80", r"nodes\[0\]\.ipv6: prefix /80 differs from lan's fd00:1::/64"),
    ],
)
def test_bad_ipv6_address_is_a_topology_error(value: str, expected: str) -> None:
    with pytest.raises(TopologyError, match=expected):
        parse_topology(with_node(ipv6=value))


@pytest.mark.parametrize(
    "pairs",
    [["a=1", "a.b=2"], ["a.b=2", "a=1"], ["a.b.c=1", "a.b=2", "a.b.c.d=3"]],
)
def test_set_of_a_value_and_of_a_key_under_it_is_refused(pairs: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"--set 'a[.=].*: a"):
        parse_pairs(pairs)


def test_set_of_sibling_keys_still_merges() -> None:
    assert parse_pairs(["a.b=1", "a.c=2"]) == {"a": {"b": 1, "c": 2}}


# ---- state ------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(st, "RUN_ROOT", tmp_path)
    return tmp_path


def test_corrupt_state_loads_like_a_missing_one(run_dir: Path) -> None:
    st.LabState(name="x", fingerprint="f", source="s").save()
    assert st.LabState.load("x") is not None
    (st.lab_dir("x") / "state.json").write_text("{ not json")
    assert st.LabState.load("x") is None
    assert st.LabState.is_corrupt("x")
    (st.lab_dir("x") / "state.json").write_text('["a list"]')
    assert st.LabState.load("x") is None
    assert not st.LabState.is_corrupt("nosuch")


def test_old_state_without_start_time_still_loads(run_dir: Path) -> None:
    path = st.lab_dir("old") / "state.json"
    path.parent.mkdir(parents=True)
    rec = {"name": "etcd", "pid": os.getpid(), "netns": "pn-old-cp", "argv": ["python"], "log": ""}
    path.write_text(json.dumps({"name": "old", "fingerprint": "f", "source": "s", "processes": [rec]}))
    state = st.LabState.load("old")
    assert state is not None and state.process("etcd") is not None
    assert state.process("etcd").start_time == 0  # type: ignore[union-attr]


def test_add_process_records_the_start_time(run_dir: Path) -> None:
    state = st.LabState(name="x", fingerprint="f", source="s")
    state.add_process(st.ProcessRecord("me", os.getpid(), "", ["python"]))
    rec = st.LabState.load("x").process("me")  # type: ignore[union-attr]
    assert rec is not None and rec.start_time == st.proc_start_time(os.getpid()) > 0


def _exe() -> str:
    return Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_running_compares_the_start_time() -> None:
    me, started = os.getpid(), st.proc_start_time(os.getpid())
    assert st.ProcessRecord("me", me, "", [_exe()], start_time=started).running()
    # same PID and program, but another start time: the PID was reused
    assert not st.ProcessRecord("me", me, "", [_exe()], start_time=started + 1).running()
    # no start time recorded (old state): the command line decides, as before
    assert st.ProcessRecord("me", me, "", [_exe()]).running()
    assert not st.ProcessRecord("me", me, "", ["etcd"]).running()


def test_empty_cmdline_counts_only_with_a_matching_start_time() -> None:
    kthreadd = 2  # a kernel thread: empty cmdline, always there
    if not Path(f"/proc/{kthreadd}/cmdline").exists():
        pytest.skip("no PID 2 in this PID namespace")
    assert not st.ProcessRecord("k", kthreadd, "", ["etcd"]).running()
    started = st.proc_start_time(kthreadd)
    assert st.ProcessRecord("k", kthreadd, "", ["etcd"], start_time=started).running()
    assert not st.ProcessRecord("k", kthreadd, "", ["etcd"], start_time=started + 7).running()


# ---- teardown without state -------------------------------------------------------------------


def test_down_without_state_leaves_namespaces_other_labs_record(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pn-two-subnets-node1``: lab ``two``'s host ``subnets-node1`` or lab ``two-subnets``'s node1."""
    other = st.LabState(name="two-subnets", fingerprint="f", source="s")
    other.namespaces = ["pn-two-subnets-node1", "pn-two-subnets-sw-net1"]
    other.save()
    on_disk = ["pn-two-node1", "pn-two-subnets-node1", "pn-two-subnets-sw-net1", "pn-two-sw-lan"]
    monkeypatch.setattr(td.netns, "listed", lambda prefix="": [n for n in on_disk if n.startswith(prefix)])
    assert td.lab_namespaces("two", None) == ["pn-two-node1", "pn-two-sw-lan"]
    assert td.lab_exists("two")
    assert not td.lab_exists("three")
    # with a state, only what it recorded (written before each namespace was made)
    mine = st.LabState(name="two", fingerprint="g", source="s", namespaces=["pn-two-node1"])
    assert td.lab_namespaces("two", mine) == ["pn-two-node1"]


def test_a_cgroup_failure_still_removes_the_namespaces_and_keeps_the_state(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = st.LabState(name="cg", fingerprint="f", source="s", namespaces=["pn-cg-node1"])
    state.info["cgroups"] = ["/sys/fs/cgroup/pids/pn-cg-node1"]
    state.save()
    removed: list[str] = []

    def vanished(_paths: object) -> list[int]:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(td.kubenode, "remove_cgroups", vanished)
    monkeypatch.setattr(td.netns, "exists", lambda name: True)
    monkeypatch.setattr(td.netns, "pids_in", lambda name: [])
    monkeypatch.setattr(td.netns, "remove", removed.append)
    with pytest.raises(OSError, match=r"lab cg: removing the real nodes. cgroups.*lab down cg` again"):
        td.teardown("cg")
    assert removed == ["pn-cg-node1"]
    assert st.LabState.load("cg") is not None  # the second run still finds the cgroups


# ---- children's environment -------------------------------------------------------------------


def test_children_do_not_inherit_podnet_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODNET_ROUTING_MODE", "native")
    monkeypatch.setenv("PODNET_RUN_DIR", "/tmp/pn-run")
    monkeypatch.setenv("HOME_FOR_TEST", "kept")
    env = child_env({"PODNET_CONFIG": "/etc/x.yaml"})
    assert "PODNET_ROUTING_MODE" not in env
    assert env["PODNET_RUN_DIR"] == "/tmp/pn-run"
    assert env["PODNET_CONFIG"] == "/etc/x.yaml"
    assert env["HOME_FOR_TEST"] == "kept"


# ---- command lines ----------------------------------------------------------------------------


def test_bgp_without_lab_or_agent_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from podnet.verify.bgp import cmd_peers

    def no_lab(name: str | None) -> Any:
        raise AssertionError(f"without --lab no lab is opened (asked for {name})")

    sock = tmp_path / "agent.sock"
    args = argparse.Namespace(lab=None, node=None, router=None, socket=sock, output="table")
    assert cmd_peers(args, open_lab=no_lab) == 1
    err = capsys.readouterr().err
    assert f"error: no podnet agent at {sock}: start podnet agent, or use --lab NAME" in err


def test_lab_up_failure_is_one_line_without_traceback(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import podnet.lab.run as run
    from podnet.lab.cli import cmd_up

    def broken(*_a: object, **_kw: object) -> None:
        raise KeyError("podIPs")

    monkeypatch.setattr(run, "bring_up", broken)
    args = argparse.Namespace(file="l2", set=[], output="json", underlay_only=True)
    assert cmd_up(args) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: KeyError: 'podIPs'; the lab was removed (see podnet lab list)"


def test_lab_down_of_an_unknown_lab(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from podnet.lab.cli import cmd_down

    args = argparse.Namespace(name="nosuch-zz9", all=False, output="table")
    assert cmd_down(args) == 1
    assert "error: no lab named nosuch-zz9 (podnet lab list)" in capsys.readouterr().err


def test_labview_uses_the_cluster_settings_the_lab_was_brought_up_with(run_dir: Path) -> None:
    from podnet.lab.topology import load_topology
    from podnet.lab.view import LabView

    source = load_topology("l2").source
    state = st.LabState(name="view", fingerprint="f", source=source, status="up")
    state.info["cluster"] = {"routingMode": "tunnel", "autoDirectNodeRoutes": False}
    state.info["overrides"] = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
    state.save()
    with LabView("view") as view:
        assert view.topology.cluster == {"routingMode": "tunnel", "autoDirectNodeRoutes": False}
        assert view.topology.name == "view"


def test_private_files_are_0600_from_the_first_byte(tmp_path: Path) -> None:
    import os
    import stat

    from podnet.util.files import write_private

    path = write_private(tmp_path / "sub" / "exabgp.conf", "neighbor 1.2.3.4 { md5-password secret; }\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    path.chmod(0o644)
    write_private(path, "again\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_text() == "again\n"
    assert [p.name for p in path.parent.iterdir()] == ["exabgp.conf"]  # no temporary file left


def test_checking_a_labs_configuration_writes_nothing() -> None:
    """Validating the agents' settings of a lab that is not up (lab up's first step, the BGP
    checks) names certificate files but makes none: no lab directory appears."""
    import dataclasses

    from podnet.lab.bird import node_configs
    from podnet.lab.cluster import validate_cluster_config
    from podnet.lab.topology import load_topology

    topo = dataclasses.replace(load_topology("two-subnets"), name="tcheck")
    assert not st.lab_dir("tcheck").exists()
    validate_cluster_config(topo)
    assert set(node_configs(topo)) == {"node1", "node2"}
    assert not st.lab_dir("tcheck").exists()
