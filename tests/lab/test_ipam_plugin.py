"""An IPAM mode added from outside podnet (issue 30): ``tests/plugins/podnet_dummyipam.py`` is one
spec and one allocator factory, loaded by ``PODNET_PLUGINS``. A lab whose cluster chooses it
(through the CLI, as a user would) runs no operator, gives each pod an address of its node's own
CIDR, routes between the nodes' CIDRs, and reports the mode in status and ``podnet ipam``; a
config that names a mode nobody registered is refused with the list of modes. Nothing in podnet
names it."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pluginhelpers import PODNET, l2_lab_file, plugin_env, podnet_json, run_podnet

from podnet.lab import state as st

pytestmark = pytest.mark.lab

ENV = plugin_env("podnet_dummyipam")


def _podnet(*args: str, code: int = 0, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return run_podnet(env, *args, code=code)


def _json(*args: str) -> dict[str, Any]:
    return podnet_json(ENV, *args)


@pytest.fixture
def plugin_lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name, path = l2_lab_file(tmp_path, "ipamplug", ipam_mode="dummy-node")
    try:
        yield name, path
    finally:
        subprocess.run([PODNET, "lab", "down", name], capture_output=True, timeout=240, env=ENV)


def test_a_plugin_ipam_mode_serves_the_cluster(plugin_lab: tuple[str, Path]) -> None:
    lab, path = plugin_lab
    # without the plugin the mode does not exist, and the error lists the ones that do
    plain = {k: v for k, v in ENV.items() if k != "PODNET_PLUGINS"}
    refused = _podnet("lab", "up", str(path), code=1, env=plain)
    assert "dummy-node" in refused.stderr and "cluster-pool" in refused.stderr, refused.stderr
    assert st.LabState.load(lab) is None  # nothing was made
    _podnet("lab", "up", str(path))
    state = st.LabState.load(lab)
    assert state is not None and state.process("operator") is None  # the mode needs no operator
    status = _json("status", "--lab", lab)
    expected = {f"node{i}": f"10.244.{100 + i}.0/24" for i in (1, 2, 3)}
    for node, cidr in expected.items():
        ipam = status["nodes"][node]["ipam"]
        assert ipam["mode"] == "dummy-node" and ipam["podCIDRs"] == [cidr], ipam
        peers = {p["name"]: p["podCIDRs"] for p in status["nodes"][node]["peers"]}
        assert peers == {n: [c] for n, c in expected.items() if n != node}, peers
    for pod, info in state.info["podIPs"].items():
        assert ipaddress.ip_address(info["ips"][0]) in ipaddress.ip_network(expected[info["node"]]), pod
    assert _json("connectivity", "test", "--lab", lab)["ok"]
    report = _podnet("ipam", "--lab", lab).stdout
    assert all(f"node{i}     10.244.{100 + i}.0/24" in report for i in (1, 2, 3)), report
