"""The cluster view without a lab: the real-host view, which adapter ``--lab`` picks, and the
commands (status, bgp, config set) driven through fake views and a fake agent on a unix socket."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socketserver
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from podnet import configcmd
from podnet.lab import state as st
from podnet.lab.view import LabView, lab_agents
from podnet.verify import bgp as bgp_cmd
from podnet.verify import cli as verify_cli
from podnet.verify import status as status_mod
from podnet.verify.hostview import HostView
from podnet.verify.view import ClusterView, NoAgentError, NoLabUpError, PathView, ViewError

# ---- helpers ----------------------------------------------------------------------------------


@contextmanager
def fake_agent(doc: dict[str, Any]) -> Iterator[Path]:
    """A unix socket answering every request line with ``doc`` (the agent API's framing)."""

    class Answer(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            self.wfile.write(json.dumps(doc).encode() + b"\n")

    folder = tempfile.mkdtemp(prefix="pnv-")  # short: a unix socket path has 108 bytes at most
    path = Path(folder) / "agent.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


class FakeIPRoute:
    def get_links(self) -> list[Any]:
        return []


class FakeRouter:
    def __init__(self, name: str, answers: dict[str, str]) -> None:
        self.name = name
        self.answers = answers

    def birdc(self, *command: str) -> str:
        return self.answers[" ".join(command)]


class FakeLab:
    """A lab-shaped ClusterView: nodes with agent sockets and status documents, routers."""

    def __init__(self, docs: dict[str, dict[str, Any]], sockets: dict[str, Path], routers: list[Any]) -> None:
        self.docs, self.sockets, self.routers = docs, sockets, routers

    lab = "fake"

    @property
    def nodes(self) -> list[str]:
        return sorted(self.docs)

    def ns(self, host: str) -> str:
        return f"pnt-fake-{host}"

    def ipr(self, host: str) -> FakeIPRoute:
        return FakeIPRoute()

    def agent_socket(self, node: str) -> Path:
        return self.sockets.get(node, Path("/nonexistent/agent.sock"))

    def agent_status(self, node: str) -> dict[str, Any]:
        return self.docs[node]

    def routers_by_address(self) -> dict[str, str]:
        return {"172.16.2.1": "r1"}

    def supervised(self) -> list[dict[str, Any]]:
        return []

    def bgp_routers(self) -> list[Any]:
        return self.routers

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeLab:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(st, "RUN_ROOT", tmp_path)
    return tmp_path


def no_lab(name: str | None) -> Any:
    raise AssertionError(f"no lab may be opened here (asked for {name!r})")


def public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


# ---- the two implementations have what the interface names -----------------------------------


def test_lab_view_is_a_path_view_and_host_view_a_cluster_view(run_dir: Path) -> None:
    from podnet.lab.topology import load_topology

    st.LabState(name="v", fingerprint="f", source=load_topology("l2").source, status="up").save()
    with LabView("v") as lab, HostView() as host:
        assert public(PathView) <= public(lab), public(PathView) - public(lab)
        assert public(ClusterView) <= public(host), public(ClusterView) - public(host)
        walking = public(PathView) - public(ClusterView)
        assert walking and not walking & public(host), "a real host is no PathView: it cannot walk paths"


# ---- the real host's view ---------------------------------------------------------------------


def test_host_view_is_this_namespace_with_one_agent_and_no_routers(tmp_path: Path) -> None:
    view = HostView(tmp_path / "agent.sock")
    assert (view.lab, view.nodes, view.ns("local")) == (None, ["local"], None)
    assert view.agent_socket("local") == tmp_path / "agent.sock"
    assert view.routers_by_address() == {} and list(view.bgp_routers()) == []


def test_host_view_without_agent_says_what_to_start(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    with pytest.raises(NoAgentError, match=rf"^agent socket {sock}: No such file or directory; is the agent"):
        HostView(sock).agent_status("local")


def test_host_view_reads_its_agent() -> None:
    with fake_agent({"ready": True, "node": {"name": "node7"}}) as sock:
        assert HostView(sock).agent_status("local")["node"]["name"] == "node7"


# ---- which adapter: --lab chooses -------------------------------------------------------------


def status_args(**kw: Any) -> argparse.Namespace:
    base = {"lab": None, "agent_socket": None, "node": None, "verbose": False, "output": "json"}
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize(
    ("lab", "agent_socket", "default_exists", "expected"),
    [
        ("two", None, True, "lab two"),  # --lab wins over a local agent
        (None, None, True, "host /default.sock"),  # no --lab, this host runs an agent
        (None, None, False, "lab None"),  # no --lab, no agent: the only lab that is up
        ("two", "/given.sock", False, "host /given.sock"),  # --agent-socket wins (as before)
    ],
)
def test_status_picks_the_adapter(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lab: str | None,
    agent_socket: str | None,
    default_exists: bool,
    expected: str,
) -> None:
    default = tmp_path / "default.sock"
    if default_exists:
        default.touch()
    monkeypatch.setattr(verify_cli, "DEFAULT_AGENT_SOCKET", default)
    view = verify_cli.status_view(status_args(lab=lab, agent_socket=agent_socket), lambda name: f"lab {name}")
    shown = view if isinstance(view, str) else f"host {view.socket}"
    assert shown == expected.replace("/default.sock", str(default))


def test_bgp_without_lab_is_the_host_and_with_lab_the_lab(tmp_path: Path) -> None:
    args = argparse.Namespace(lab=None, socket=tmp_path / "s.sock")
    view = bgp_cmd.bgp_view(args, no_lab)
    assert isinstance(view, HostView) and view.socket == tmp_path / "s.sock"
    args.lab = "two"
    assert bgp_cmd.bgp_view(args, lambda name: f"lab {name}") == "lab two"


def test_path_commands_with_no_lab_up_say_what_to_use_on_a_real_host() -> None:
    def none_up(name: str | None) -> Any:
        raise NoLabUpError("no lab is up: start one with `podnet lab up two-subnets`")

    args = argparse.Namespace(lab=None)
    with pytest.raises(NoLabUpError) as err:
        verify_cli.path_view(args, none_up, "diagnose")
    today = "no lab is up: start one with `podnet lab up two-subnets`"
    assert str(err.value).startswith(f"{today}; on a real host, `ip route get DST`")


def test_path_commands_keep_other_lab_errors() -> None:
    def several(name: str | None) -> Any:
        raise ViewError("several labs are up (a, b): choose one with --lab NAME")

    with pytest.raises(ViewError, match=r"^several labs are up \(a, b\): choose one with --lab NAME$"):
        verify_cli.path_view(argparse.Namespace(lab=None), several, "perf")


# ---- status through a view --------------------------------------------------------------------


@pytest.fixture
def no_nft(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_mod.KernelReader, "nft_table", lambda self: None)


def test_cluster_status_of_a_lab_names_every_node_and_reports_a_silent_agent(no_nft: None) -> None:
    docs = {
        "node1": {"ready": True, "node": {"name": "node1"}, "routing": {"mode": "tunnel"}},
        "node2": {"error": "agent of node2 does not answer: [Errno 111] Connection refused"},
    }
    out = status_mod.cluster_status(FakeLab(docs, {}, []), None, False)
    assert out["lab"] == "fake" and list(out["nodes"]) == ["node1", "node2"]
    assert out["nodes"]["node1"]["agent"]["ready"] is True
    assert out["nodes"]["node2"] == {"agent": {"ready": False, "error": docs["node2"]["error"]}}
    assert list(status_mod.cluster_status(FakeLab(docs, {}, []), "node2", False)["nodes"]) == ["node2"]
    with pytest.raises(ViewError, match=r"^node9 is not a node of lab fake \(nodes: node1, node2\)$"):
        status_mod.cluster_status(FakeLab(docs, {}, []), "node9", False)


def test_status_on_a_host_is_keyed_by_the_agents_name_and_ignores_node(
    no_nft: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(HostView, "ipr", lambda self, host: FakeIPRoute())
    doc = {"ready": True, "phase": "running", "node": {"name": "node7"}, "routing": {"mode": "native"}}
    with fake_agent(doc) as sock:
        code = verify_cli.cmd_status(status_args(agent_socket=str(sock), node="other"), no_lab)
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["lab"] is None and list(out["nodes"]) == ["node7"]
    assert out["nodes"]["node7"]["peers"] == [] and out["nodes"]["node7"]["routing"]["summary"] == "Native"


def test_status_on_a_host_without_agent_fails_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "agent.sock"
    assert verify_cli.cmd_status(status_args(agent_socket=str(sock)), no_lab) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: agent socket {sock}: No such file or directory; is the agent running" in captured.err


# ---- podnet bgp through a view ----------------------------------------------------------------

PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
node_node1 BGP        ---        up     2026-11-21 23:32:18  Established
  Description:    node node1
  BGP state:          Established
    Neighbor address: 172.16.2.2
    Neighbor AS:      64512
  Channel ipv4
    Routes:         1 imported, 1 exported, 1 preferred
"""
RECEIVED = """\
BIRD 2.0.12 ready.
Table master4:
10.244.1.0/24        unicast [node_node1 2026-11-21 23:32:18 from 172.16.2.2] * (100) [AS64512i]
\tvia 172.16.2.2 on net1
"""
NODE_BGP = {
    "advertised": ["10.244.1.0/24"],
    "peers": [{"peerAddress": "172.16.2.1", "peerASN": 65001, "state": "established",
               "receivedPrefixes": ["10.244.2.0/24"]}],
}  # fmt: skip


def bgp_args(**kw: Any) -> argparse.Namespace:
    base = {"lab": "fake", "node": None, "router": None, "output": "json"}
    base |= {"advertised": False, "received": False}
    return argparse.Namespace(**{**base, **kw})


def test_bgp_peers_of_a_lab_ask_each_agent_and_each_router(capsys: pytest.CaptureFixture[str]) -> None:
    r1 = FakeRouter("r1", {"show protocols all": PROTOCOLS})
    with fake_agent({"bgp": NODE_BGP}) as sock:
        lab = FakeLab({"node1": {}, "node2": {}}, {"node1": sock}, [r1])  # node2 runs no agent
        assert bgp_cmd.cmd_peers(bgp_args(), lambda name: lab) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["host"], r["role"], r["peerAddress"], r["state"]) for r in rows] == [
        ("node1", "node", "172.16.2.1", "established"),
        ("r1", "router", "172.16.2.2", "established"),
    ]


def test_bgp_routes_of_one_router(capsys: pytest.CaptureFixture[str]) -> None:
    r1 = FakeRouter("r1", {"show protocols all": PROTOCOLS, "show route": RECEIVED})
    lab = FakeLab({}, {}, [r1])
    assert bgp_cmd.cmd_routes(bgp_args(router="r1", received=True), lambda name: lab) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"host": "r1", "role": "router", "direction": "received", "prefix": "10.244.1.0/24",
                     "peer": "node node1", "nexthop": "172.16.2.2"}]  # fmt: skip


def test_bgp_names_what_a_lab_has(capsys: pytest.CaptureFixture[str]) -> None:
    lab = FakeLab({}, {}, [FakeRouter("r1", {})])
    assert bgp_cmd.cmd_peers(bgp_args(router="r9"), lambda name: lab) == 1
    assert "r9 is not a router running BIRD in lab fake (known: r1)" in capsys.readouterr().err
    assert bgp_cmd.cmd_peers(bgp_args(), lambda name: FakeLab({}, {}, [])) == 1
    assert "lab fake is not up (no agents, no BGP routers)" in capsys.readouterr().err


def test_bgp_on_a_host_needs_lab_for_node_or_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bgp_args(lab=None, router="r1", socket=tmp_path / "agent.sock")
    assert bgp_cmd.cmd_peers(args, no_lab) == 1
    assert "podnet bgp peers: --node and --router need --lab NAME" in capsys.readouterr().err


# ---- podnet config set through an adapter -----------------------------------------------------


def set_args(pairs: list[str], **kw: Any) -> argparse.Namespace:
    base = {"pairs": pairs, "lab": None, "node": None, "config": "/nonexistent.yaml", "no_wait": False,
            "output": "json"}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def no_lab_agents(lab: str, node: str | None) -> list[configcmd.RunningAgent]:
    raise AssertionError(f"without --lab no lab is asked (asked for {lab})")


def test_config_set_on_a_host_edits_its_file_and_waits_for_nobody(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text(yaml.safe_dump({"nodeName": "n1", "routingMode": "tunnel"}))
    assert configcmd.cmd_set(set_args(["mtu=1400"], config=str(conf)), no_lab_agents) == 0
    assert yaml.safe_load(conf.read_text()) == {"nodeName": "n1", "routingMode": "tunnel", "mtu": 1400}
    assert json.loads(capsys.readouterr().out) == {"set": ["mtu=1400"], "nodes": ["local"]}


def test_config_set_refuses_a_bad_value_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text(yaml.safe_dump({"nodeName": "n1"}))
    before = conf.read_text()
    assert configcmd.cmd_set(set_args(["routingMode=warp"], config=str(conf)), no_lab_agents) == 2
    err = capsys.readouterr().err
    assert "routingMode" in err and "nothing was changed" in err and conf.read_text() == before
    missing = tmp_path / "no.yaml"
    assert configcmd.cmd_set(set_args(["mtu=1400"], config=str(missing)), no_lab_agents) == 2
    assert f"error: no agent config at {missing} (use --config)" in capsys.readouterr().err


def test_config_set_with_lab_changes_the_adapters_agents_and_waits_until_converged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "agent.yaml"
    conf.write_text(yaml.safe_dump({"nodeName": "node1", "routingMode": "tunnel"}))
    doc = {"routing": {"mode": "tunnel"}, "lastReconcile": 4e9, "errors": []}
    with fake_agent(doc) as sock:

        def agents(lab: str, node: str | None) -> list[configcmd.RunningAgent]:
            assert (lab, node) == ("two", None)
            return [configcmd.RunningAgent("node1", conf, None, sock)]

        assert configcmd.cmd_set(set_args(["mtu=1400"], lab="two"), agents) == 0
    assert json.loads(capsys.readouterr().out)["converged"] == {"node1": "converged"}
    assert yaml.safe_load(conf.read_text())["mtu"] == 1400


# ---- the lab's adapter for config set ---------------------------------------------------------


def test_lab_agents_are_the_recorded_agent_processes(run_dir: Path) -> None:
    state = st.LabState(name="two", fingerprint="f", source="s")
    gone = st.ProcessRecord("agent-node1", 2**22 + 7, "pn-two-node1", ["podnet"], start_time=1)
    me = st.ProcessRecord("agent-node2", os.getpid(), "pn-two-node2", [sys.executable])
    me.start_time = st.proc_start_time(me.pid)  # this test process stands in for a running agent
    state.processes = [gone, st.ProcessRecord("operator", 1, "pn-two-cp", ["podnet"]), me]
    state.save()
    found = {a.node: a for a in lab_agents("two", None)}
    assert sorted(found) == ["node1", "node2"]
    assert found["node1"].pid is None  # not running: its file changes, nobody gets a SIGHUP
    assert found["node1"].config == run_dir / "labs" / "two" / "nodes" / "node1" / "agent.yaml"
    assert found["node1"].socket == run_dir / "labs" / "two" / "nodes" / "node1" / "agent.sock"
    assert [(a.node, a.pid) for a in lab_agents("two", "node2")] == [("node2", os.getpid())]
    with pytest.raises(configcmd.TargetError, match=r"^lab two has no agent on node9$"):
        lab_agents("two", "node9")
    with pytest.raises(configcmd.TargetError, match=r"^no lab named nosuch \(podnet lab list\)$"):
        lab_agents("nosuch", None)


def test_status_names_a_dead_control_plane_process_and_what_restarts_it() -> None:
    from podnet.verify.render import supervised_lines

    assert supervised_lines([]) == []
    lines = supervised_lines([
        {"name": "etcd", "pid": 10, "running": True},
        {"name": "kube-apiserver", "pid": 11, "running": False, "log": "/l/kube-apiserver.log",
         "restart": "podnet lab up t1"},
    ])  # fmt: skip
    assert lines[0] == "Control plane (lab): 1/2 running"
    assert "etcd" in lines[1] and "running (pid 10)" in lines[1]
    assert "DOWN (was pid 11, log /l/kube-apiserver.log): `podnet lab up t1` restarts it" in lines[2]
