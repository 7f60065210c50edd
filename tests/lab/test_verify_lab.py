"""Lab: status, connectivity, diagnose, capture, perf and diagram on real labs, through the CLI's JSON.

One tunnel-mode and one native-mode two-subnets lab; the failing cases are a router without a
route to the other pod CIDR (native, no BGP) and an underlay port whose MTU was lowered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab
PODNET = str(Path(sys.executable).with_name("podnet"))


def podnet(*args: str, code: int | None = 0) -> dict[str, Any]:
    res = subprocess.run([PODNET, *args], capture_output=True, text=True, timeout=120)
    if code is not None:
        assert res.returncode == code, (
            f"podnet {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        )
    return json.loads(res.stdout)


def test_tunnel_lab_status_connectivity_capture_diagnose_mtu(
    lab_up: Callable[..., Topology], tmp_path: Path
) -> None:
    topo = lab_up(load_topology("two-subnets"))
    lab = topo.name
    status = podnet("status", "--lab", lab, "--verbose", "-o", "json")
    node1 = status["nodes"]["node1"]
    assert node1["routing"]["summary"] == "Tunnel [vxlan]"
    assert node1["kvstore"]["connected"] is True
    assert node1["mtu"]["route"] == 1450 and node1["mtu"]["kernelDevice"] == 1500
    assert node1["ipam"]["used"] == 1 and node1["ipam"]["total"] > 1
    (peer,) = node1["peers"]
    assert (peer["name"], peer["kernelReach"], peer["health"], peer["agrees"]) == (
        "node2",
        "tunnel",
        "ok",
        True,
    )
    assert any("podnet_vxlan" in r for r in node1["kernel"]["routes"])
    assert node1["kernel"]["fdb"], "verbose status lists the FDB entries podnet owns"

    conn = podnet("connectivity", "test", "--lab", lab, "-o", "json", code=None)
    by = {(r["check"], r["from"].split()[0], r["to"].split()[0]): r for r in conn["results"]}
    assert by[("pod-to-pod across nodes", "pod1", "pod2")]["status"] == "pass"
    assert by[("node-to-pod", "node1", "pod2")]["status"] == "pass"
    assert by[("full-size DF packet", "pod1", "pod2")]["status"] == "pass"
    assert by[("full-size DF packet", "pod1", "pod2")]["size"] == 1450
    ext = by[("pod-to-external", "pod1", "world")]
    if ext["status"] == "fail":  # no masquerade rule yet: the diagnosis must say so
        assert ext["stoppedAt"]["host"] == "r1" and "masquerade" in ext["stoppedAt"]["fix"]

    cap = podnet("capture", "--lab", lab, "--on", "r1:to-r2", "--seconds", "1", "-o", "json")
    assert cap["kind"] == "vxlan" and cap["saw"].startswith("VXLAN UDP/8472 carrying 10.244.1.")

    diag = podnet("diagnose", "pod1", "pod2", "--lab", lab, "-o", "json")
    assert diag["ok"] is True
    assert [h["action"] for h in diag["forward"]["hops"]].count("encap") == 1

    # a lowered MTU on the segment port towards node2 silently drops full-size tunnel packets
    subprocess.run(["ip", "-n", f"pn-{lab}-sw-net2", "link", "set", "node2", "mtu", "1400"], check=True)
    conn = podnet("connectivity", "test", "--lab", lab, "-o", "json", code=1)
    full = next(
        r for r in conn["results"] if r["check"] == "full-size DF packet" and r["from"].startswith("pod1")
    )
    assert full["status"] == "fail" and full["stoppedAt"]["kind"] == "mtu"
    assert by[("pod-to-pod across nodes", "pod1", "pod2")]["status"] == "pass"
    diag = podnet("diagnose", "pod1", "pod2", "--lab", lab, "-o", "json", code=1)
    assert diag["verdict"]["kind"] == "mtu"
    assert "MTU 1400" in diag["verdict"]["reason"] and "segment net2 port node2" in diag["verdict"]["reason"]

    svg = tmp_path / "lab.svg"
    res = subprocess.run(
        [PODNET, "lab", "diagram", lab, "-o", str(svg)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    text = svg.read_text()
    assert "<svg" in text and "VXLAN tunnel" in text and "pod2" in text


def test_native_without_underlay_routes_fails_and_diagnose_names_r1(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), ["routingMode=native"]))
    lab = topo.name
    status = podnet("status", "--lab", lab, "--node", "node1", "-o", "json")
    peer = status["nodes"]["node1"]["peers"][0]
    assert status["nodes"]["node1"]["routing"]["summary"] == "Native"
    assert peer["kernelReach"] == "underlay-router" and "r1" in peer["path"]
    assert peer["health"] == "unreachable"

    conn = podnet("connectivity", "test", "--lab", lab, "--deadline", "60", "-o", "json", code=1)
    across = [r for r in conn["results"] if r["check"] == "pod-to-pod across nodes"]
    assert across and all(r["status"] == "fail" for r in across)
    first = next(r for r in across if r["from"].startswith("pod1"))
    assert first["stoppedAt"]["host"] == "r1"
    own = [r for r in conn["results"] if r["check"] == "pod-to-own-node"]
    assert own and all(r["status"] == "pass" for r in own)

    diag = podnet("diagnose", "pod1", "pod2", "--lab", lab, "-o", "json", code=1)
    assert diag["verdict"]["host"] == "r1"
    assert "router r1 has no route to 10.244.2.0/24" in diag["verdict"]["reason"]
    assert "bgp.enabled" in diag["verdict"]["fix"] and "routingMode=tunnel" in diag["verdict"]["fix"]


def test_perf_measures_host_and_pods_with_iperf3(lab_up: Callable[..., Topology], tmp_path: Path) -> None:
    topo = lab_up(load_topology("two-subnets"))
    png = tmp_path / "perf.png"
    doc = podnet(
        "perf", "--lab", topo.name, "--repetitions", "1", "--seconds", "1", "--plot", str(png), "-o", "json"
    )
    host, pods = doc["results"]
    assert host["label"].startswith("host") and "tunnel vxlan" in pods["label"]
    assert host["medianGbps"] > 0 and pods["ratioToHost"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
