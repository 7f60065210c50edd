"""A routing mode added from outside podnet (issue 30): ``tests/plugins/podnet_dummyroute.py`` is
one spec and one class, loaded by ``PODNET_PLUGINS``. A lab whose cluster chooses it (through the
CLI, as a user would: lab up, status, connectivity test, a live switch, lab down) routes every
peer's pod CIDR on-link via the peer's node IP, names the mode in status, sends pod packets
unencapsulated, and switches live to the built-in tunnel and back; a value no mode serves is
refused with the modes that exist. Nothing in podnet names it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import capture, pod_ips, sh
from pluginhelpers import PODNET, l2_lab_file, plugin_env, podnet_json, run_podnet

from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

ENV = plugin_env("podnet_dummyroute")


def _podnet(*args: str, code: int = 0, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return run_podnet(env, *args, code=code)


def _json(*args: str) -> dict[str, Any]:
    return podnet_json(ENV, *args)


@pytest.fixture
def onlink_lab(tmp_path: Path) -> Iterator[Topology]:
    name, path = l2_lab_file(tmp_path, "route", pods=1)
    try:
        # without the plugin the value is refused, nothing is made, and the modes are listed
        refused = _podnet("lab", "up", str(path), "--set", "routingMode=onlink", code=1, env=plugin_env())
        assert "onlink" in refused.stderr and "tunnel" in refused.stderr, refused.stderr
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        _podnet("lab", "up", str(path), "--set", "routingMode=onlink", "--set", "autoDirectNodeRoutes=false")
        yield load_topology(str(path))
    finally:
        subprocess.run([PODNET, "lab", "down", name], capture_output=True, timeout=240, env=ENV)


def test_a_plugin_routing_mode_carries_the_cluster(onlink_lab: Topology) -> None:
    topo = onlink_lab
    lab = topo.name
    status = _json("status", "--lab", lab)
    for node, doc in status["nodes"].items():
        routing = doc["routing"]
        assert routing["modeName"] == "onlink" and routing["summary"] == "Onlink (plugin)", (node, routing)
        assert {p["plannedReach"] for p in doc["peers"]} == {"direct-route"}, (node, doc["peers"])
    ips = pod_ips(topo)
    routes = sh(topo, "node1", "ip", "route", "show", "proto", "201")
    assert "via 192.168.1.11 dev eth0 onlink" in routes, routes
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    # pod packets cross the segment as they are: the pods' own addresses on the wire
    with capture(topo, "node2", "eth0", "icmp") as wire:
        sh(topo, "node1-p1", "ping", "-c", "2", "-W", "1", ips["node2-p1"])
    assert any(f"{ips['node1-p1']} > {ips['node2-p1']}" in line for line in wire), wire
    # a live switch to the built-in tunnel and back
    _podnet("config", "set", "--lab", lab, "routingMode=tunnel")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    assert "podnet_vxlan" in sh(topo, "node1", "ip", "link")
    _podnet("config", "set", "--lab", lab, "routingMode=onlink")
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    after = _json("status", "--lab", lab)["nodes"]["node1"]
    assert after["routing"]["modeName"] == "onlink", after["routing"]
    routes = sh(topo, "node1", "ip", "route", "show", "proto", "201")
    assert "via 192.168.1.11 dev eth0 onlink" in routes, routes
