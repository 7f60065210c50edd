"""Drops as a first-class signal (issue 18): the agent's drop monitor reports each packet the
pod guard drops, with interface, addresses and reason (``podnet drops``, ``--follow``, ``-o
json``), ``podnet status`` counts them by reason with the kernel's own drop counters, a flooding
pod cannot flood the monitor, the setting is live, and a killed agent's successor reads on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labhelpers import PODNET, agent_pid, config_set, pod_ips, podnet_json, restart_agent, sh, wait_for

from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

RAWSEND = str(Path(__file__).with_name("rawsend.py"))


def _events(topo: Topology) -> list[dict[str, Any]]:
    res = subprocess.run([PODNET, "drops", "--lab", topo.name, "--node", "node1", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _drops_status(topo: Topology) -> dict[str, Any]:
    doc = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json", code=None)
    return doc["nodes"]["node1"]["drops"]  # type: ignore[no-any-return]


def _veth_of(topo: Topology, address: str) -> str:
    doc = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json", code=None)
    return next(
        e["hostIfname"] for e in doc["nodes"]["node1"]["guard"]["endpoints"] if address in e["addresses"]
    )


def _spoof(topo: Topology, src: str, dst: str, count: int = 3) -> None:
    sh(topo, "node1-p1", sys.executable, RAWSEND, "udp", src, dst, "9999", str(count))


def test_drop_events_name_interface_addresses_and_reason(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(load_topology("l2"))
    ips = pod_ips(topo)
    veth = _veth_of(topo, ips["node1-p1"])
    _spoof(topo, "10.244.77.7", ips["node2-p1"])
    wait_for(lambda: sum(e["reason"] == "spoofed" for e in _events(topo)) >= 3, "three spoofed events", 15)
    event = next(e for e in _events(topo) if e["reason"] == "spoofed")
    assert (event["in"], event["src"], event["dst"], event["proto"], event["dport"]) == (
        veth, "10.244.77.7", ips["node2-p1"], "UDP", 9999,
    ), event  # fmt: skip
    assert "source verification" in event["meaning"]
    assert _drops_status(topo)["byReason"]["spoofed"] >= 3

    # --follow prints what happens while it runs
    argv = [PODNET, "drops", "--lab", topo.name, "--follow", "--seconds", "6", "-o", "json"]
    follow = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        node1 = str(next(h for h in topo.nodes if h.name == "node1").primary.ip)
        send = (
            f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{node1}', 8472))"
        )
        sh(topo, "node1-p1", sys.executable, "-c", send)
        out, _ = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    followed = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert any(e["reason"] == "pod_to_tunnel" and e["dport"] == 8472 for e in followed), followed

    # a flooding pod: the guard drops every packet, the monitor keeps a rate-limited few
    before = len(_events(topo))
    sh(topo, "node1-p1", sys.executable, RAWSEND, "flood", "10.244.99.9", ips["node2-p1"], "30", "3000")
    guard = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json", code=None)
    spoofed = sum(e["spoofDrops"] for e in guard["nodes"]["node1"]["guard"]["endpoints"])
    assert spoofed >= 3003, spoofed
    kept = len(_events(topo)) - before
    assert 0 < kept < 1000, kept


def test_drop_events_setting_is_live_and_survive_an_agent_kill(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(load_topology("l2"))
    ips = pod_ips(topo)
    res = config_set(topo.name, "bpf.events.drop.enabled=false")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(
        lambda: "podnet-drop:" not in sh(topo, "node1", "nft", "list", "table", "inet", "podnet_guard"),
        "the log rules to go",
        20,
    )
    _spoof(topo, "10.244.77.7", ips["node2-p1"])
    status = _drops_status(topo)
    assert status["events"] is False and not _events(topo), status
    res = config_set(topo.name, "bpf.events.drop.enabled=true")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(
        lambda: "podnet-drop:" in sh(topo, "node1", "nft", "list", "table", "inet", "podnet_guard"),
        "the log rules to come back",
        20,
    )
    # kill -9: the rules stay; the next agent binds the group again and reads on
    os.kill(agent_pid(topo, "node1"), signal.SIGKILL)
    restart_agent(topo, "node1")
    _spoof(topo, "10.244.66.6", ips["node2-p1"])
    wait_for(lambda: any(e["src"] == "10.244.66.6" for e in _events(topo)), "events after a restart", 15)
    assert _drops_status(topo)["error"] is None
