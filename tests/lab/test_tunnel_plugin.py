"""A tunnel protocol added from outside podnet (issue 30): ``tests/plugins/podnet_dummytunnel.py``
is one spec and one implementation, loaded by ``PODNET_PLUGINS``. A lab whose cluster chooses it
(everything through the CLI, as a user would: lab up, status, connectivity test, capture, lab
down) carries every pod's traffic in it: its own device and UDP port on the wire, its MTU, its
name in status and capture, its port closed to pods by the guard, and a live switch to VXLAN and
back. Nothing in podnet was changed for it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import capture, pod_ips, sh
from pluginhelpers import PODNET, l2_lab_file, plugin_env, podnet_json, run_podnet

from podnet.lab.topology import load_topology

pytestmark = pytest.mark.lab

ENV = plugin_env("podnet_dummytunnel")
DUMMY = ["routingMode=tunnel", "autoDirectNodeRoutes=false", "tunnelProtocol=dummyvx"]


def _podnet(*args: str, code: int = 0, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return run_podnet(env, *args, code=code)


def _json(*args: str) -> dict[str, Any]:
    return podnet_json(ENV, *args)


@pytest.fixture
def plugin_lab(tmp_path: Path) -> Iterator[Any]:
    name, path = l2_lab_file(tmp_path, "plugin", pods=1)
    try:
        _podnet("lab", "up", str(path), *[a for pair in DUMMY for a in ("--set", pair)])
        yield load_topology(str(path))
    finally:
        subprocess.run([PODNET, "lab", "down", name], capture_output=True, timeout=240, env=ENV)


def test_a_plugin_tunnel_protocol_carries_the_cluster(plugin_lab: Any) -> None:
    topo = plugin_lab
    lab = topo.name
    status = _json("status", "--lab", lab)
    node1 = status["nodes"]["node1"]
    assert node1["routing"]["summary"] == "Tunnel [dummyvx]", node1["routing"]
    assert node1["routing"]["tunnelPort"] == 4790, node1["routing"]
    assert node1["mtu"]["route"] == 1450, node1["mtu"]
    links = sh(topo, "node1", "ip", "-d", "link", "show", "podnet_dvx")
    assert "vxlan id 1" in links and "dstport 4790" in links, links
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    seen = _json("capture", "--lab", lab, "--on", "node2:eth0")
    assert seen["kind"] == "dummyvx" and "DummyVX UDP/4790 carrying" in seen["saw"], seen
    with capture(topo, "node2", "eth0", "udp port 4790") as wire:
        sh(topo, "node1-p1", "ping", "-c", "2", "-W", "1", pod_ips(topo)["node2-p1"])
    assert any("192.168.1.10." in line and "> 192.168.1.11.4790:" in line for line in wire), wire
    guard = sh(topo, "node1", "nft", "list", "table", "inet", "podnet_guard")
    assert "4790" in guard, guard
    # a live switch to the built-in VXLAN and back: the plugin's device goes and comes back
    _podnet("config", "set", "--lab", lab, "tunnelProtocol=vxlan")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    assert "podnet_dvx" not in sh(topo, "node1", "ip", "link")
    _podnet("config", "set", "--lab", lab, "tunnelProtocol=dummyvx")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
