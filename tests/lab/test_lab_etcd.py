"""Issue 10.3 and 10.5: the store's real health in status, quiet outages, an etcd cluster with
failover, and quorum loss and return; the datapath keeps working throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import PODNET, pod_ips, podnet_json

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_up
from podnet.lab.topology import Topology, load_topology, parse_topology
from podnet.verify.probe import tcp_probe

pytestmark = pytest.mark.lab

TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]


def _kvstore(topo: Topology, node: str = "node1") -> dict[str, Any]:
    return dict(cl.agent_request(topo.name, node, {"op": "status"})["kvstore"])


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _kill(topo: Topology, process: str) -> None:
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(process)
    assert rec is not None and rec.running(), f"{process} is not running"
    os.kill(rec.pid, signal.SIGKILL)
    _wait(lambda: not rec.running(), f"{process} to die")


def _pods_talk(topo: Topology) -> None:
    ips = pod_ips(topo)
    a, b = sorted(ips)[:2]
    res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b])
    assert res.ok, f"{a} -> {b}: {res.detail}"


def _agent_log(topo: Topology, node: str) -> Path:
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(f"agent-{node}")
    assert rec is not None and rec.log
    return Path(rec.log)


def test_status_probes_etcd_and_an_outage_is_logged_as_state_changes(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), TUNNEL))
    kv = _kvstore(topo)
    assert kv["state"] == "ok" and kv["version"] and kv["lastSuccess"] > 0
    log = _agent_log(topo, "node1")
    before = len(log.read_text().splitlines())
    _kill(topo, "etcd")
    _wait(lambda: _kvstore(topo)["state"] == "unreachable", "status to say the store is unreachable")
    time.sleep(12)  # an outage of some length: the old agent logged a warning every 0.5 s
    down = _kvstore(topo)
    assert down["error"] and down["failingSince"] and down["lastSuccess"] < down["failingSince"]
    _pods_talk(topo)  # the datapath does not need the store
    # diagnose: the path works (its probes came back), and it says why nothing new propagates
    diag = podnet_json("diagnose", "--lab", topo.name, "node1-p1", "node2-p1", "-o", "json")
    assert diag["status"] == "works", diag
    assert any("cannot reach etcd" in w and "node1" in w for w in diag["warnings"]), diag["warnings"]
    lines = log.read_text().splitlines()[before:]
    warnings = [line for line in lines if " WARNING " in line]
    assert 0 < len(warnings) <= 8, f"{len(warnings)} warnings in ~15 s of outage:\n" + "\n".join(warnings)
    # status names the dead member and what restarts it; that command restarts only what is down
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    etcd = next(p for p in status["controlPlane"] if p["name"] == "etcd")
    assert not etcd["running"] and etcd["restart"] == f"podnet lab up {topo.name}", etcd
    others = {p["name"]: p["pid"] for p in status["controlPlane"] if p["running"]}
    subprocess.run([PODNET, *etcd["restart"].split()[1:]], check=True, capture_output=True, timeout=180)
    _wait(lambda: _kvstore(topo)["state"] == "ok", "the agent to find the store again")
    again = podnet_json("status", "--lab", topo.name, "-o", "json")["controlPlane"]
    assert all(p["running"] for p in again), again
    assert {p["name"]: p["pid"] for p in again if p["name"] in others} == others  # the rest kept
    assert any("works again" in line for line in log.read_text().splitlines()[before:])
    _pods_talk(topo)


def _three_members(example: str) -> Topology:
    raw = yaml.safe_load((Path(__file__).parents[2] / "examples" / f"{example}.yaml").read_text())
    raw["controlPlane"] = {"etcdMembers": 3}
    return apply_overrides(parse_topology(raw), TUNNEL)


def test_three_member_etcd_fails_over_and_survives_quorum_loss(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(_three_members("l2"))
    assert [h.name for h in topo.control_planes] == ["cp", "cp2", "cp3"]
    kv = _kvstore(topo)
    assert kv["state"] == "ok" and len(kv["endpoints"]) == 3
    members = {f"https://{h.primary.address.ip}:2379": ("etcd" if h.name == "cp" else f"etcd-{h.name}")
               for h in topo.control_planes}  # fmt: skip
    first = kv["active"]
    _kill(topo, members[first])  # the member node1's agent talks to
    _wait(lambda: _kvstore(topo)["active"] != first and _kvstore(topo)["state"] == "ok", "failover")
    _pods_talk(topo)
    second = _kvstore(topo)["active"]
    _kill(topo, members[second])  # quorum lost: one member of three is left
    _wait(lambda: _kvstore(topo)["state"] == "unreachable", "status to report the lost quorum")
    _pods_talk(topo)  # the datapath keeps working without the store
    bring_up(topo)  # the two members come back and rejoin
    for node in ("node1", "node2", "node3"):
        _wait(lambda n=node: _kvstore(topo, n)["state"] == "ok", f"{node} to reconnect by itself")  # type: ignore[misc]
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert {p["name"] for p in status["peers"]} == {"node2", "node3"}
    assert all(p["reach"] == "tunnel" for p in status["peers"])
    _pods_talk(topo)
