"""Issue 6: hybrid routing per peer, live mode switches, and path MTU black-hole detection."""

from __future__ import annotations

import subprocess
import time

import pytest
from labhelpers import Stream, assert_all_pods_reach_each_other, capture, config_set, pod_ips

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import load_topology

pytestmark = pytest.mark.lab


def test_mixed_topology_plain_on_l2_vxlan_across_the_router(lab_up) -> None:
    topo = lab_up(load_topology("mixed"))
    assert_all_pods_reach_each_other(topo)
    peers = {p["name"]: p for p in cl.agent_request(topo.name, "node1", {"op": "status"})["peers"]}
    assert peers["node2"]["reach"] == "direct-route" and peers["node3"]["reach"] == "tunnel"
    ips = pod_ips(topo)
    src = ips["node1-p1"]
    src_ns = st.ns_name(topo.name, "node1-p1")
    with capture(topo, "node1", "eth0", "icmp or udp port 8472") as seen:
        for dst in (ips["node2-p1"], ips["node3-p1"]):
            subprocess.run(
                ["ip", "netns", "exec", src_ns, "ping", "-c", "2", "-W", "1", dst],
                check=True,
                capture_output=True,
            )
    to_l2 = [i for i, line in enumerate(seen) if f"{src} > {ips['node2-p1']}: ICMP" in line]
    to_routed = [i for i, line in enumerate(seen) if f"{src} > {ips['node3-p1']}: ICMP" in line]
    assert to_l2 and to_routed, seen[:8]
    assert all(".8472:" not in seen[i - 1] for i in to_l2)  # plain: no VXLAN header before it
    assert all(".8472:" in seen[i - 1] for i in to_routed)  # encapsulated to node3


def test_live_switch_tunnel_native_tunnel_keeps_pods_and_connections(lab_up) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"]))
    ips = pod_ips(topo)
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node2-p1"), ips["node2-p1"])
    try:
        stream.exchange()
        res = config_set(topo.name, "routingMode=native", "autoDirectNodeRoutes=true")
        assert res.returncode == 0, res.stdout + res.stderr
        routes = subprocess.run(
            ["ip", "netns", "exec", st.ns_name(topo.name, "node1"), "ip", "route"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "podnet_vxlan" not in routes and "via 192.168.1.11 dev eth0 proto 201" in routes
        pod_route = subprocess.run(
            ["ip", "netns", "exec", st.ns_name(topo.name, "node1-p1"), "ip", "route"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "mtu 1500" in pod_route  # the pods' route MTU followed the mode
        stream.exchange()
        res = config_set(topo.name, "routingMode=tunnel", "autoDirectNodeRoutes=false")
        assert res.returncode == 0, res.stdout + res.stderr
        stream.exchange()
        assert pod_ips(topo) == ips  # no pod was re-created
        assert_all_pods_reach_each_other(topo)
    finally:
        stream.close()


def test_bad_live_value_changes_nothing(lab_up) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"]))
    conf = cl.node_dir(topo.name, "node1") / "agent.yaml"
    before = conf.read_text()
    res = config_set(topo.name, "routingMode=warp")
    assert res.returncode == 2 and "routingMode" in res.stderr and "nothing was changed" in res.stderr
    assert conf.read_text() == before


def test_lowered_mtu_mid_path_is_reported_as_a_black_hole(lab_up) -> None:
    topo = lab_up(load_topology("two-subnets"))
    for router, dev in (("r1", "to-r2"), ("r2", "to-r1")):
        subprocess.run(
            ["ip", "netns", "exec", st.ns_name(topo.name, router), "ip", "link", "set", dev, "mtu", "1400"],
            check=True,
        )
    state = st.LabState.load(topo.name)
    assert state is not None
    agent = state.process("agent-node1")
    assert agent is not None
    deadline = time.monotonic() + 20
    found: list[dict[str, object]] = []
    pmtu: dict[str, object] = {}
    checked_before = (
        cl.agent_request(topo.name, "node1", {"op": "status"}).get("pathMTU", {}).get("checked", 0)
    )
    subprocess.run(["kill", "-HUP", str(agent.pid)], check=True)  # probe now
    while time.monotonic() < deadline:
        doc = cl.agent_request(topo.name, "node1", {"op": "status"})
        pmtu = doc.get("pathMTU", {})
        if pmtu.get("checked", 0) > checked_before:
            found = pmtu["peers"]
            break
        time.sleep(0.2)
    assert found, f"node1's agent reported no path-MTU probe within 20s of SIGHUP (status: {pmtu})"
    matches = [p for p in found if p["peer"] == "node2"]
    assert len(matches) == 1, f"expected one path-MTU result for node2, got {found}"
    (node2,) = matches
    assert node2["ok"] is False and node2["required"] == 1500 and node2["discovered"] == 1400
    assert "black hole" in node2["message"] and "set MTU to 1400" in node2["message"]


def test_restart_only_change_is_refused_and_reported(lab_up) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"]))
    res = config_set(topo.name, "ipam.operator.clusterPoolIPv4MaskSize=26")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refused" in res.stdout and "agent restart" in res.stdout
    doc = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert doc["ready"] and doc["routing"]["mode"] == "tunnel"
    assert any("can only change with an agent restart" in e for e in doc["errors"])
    res = config_set(
        topo.name,
        "ipam.operator.clusterPoolIPv4MaskSize=24",
        "routingMode=native",
        "autoDirectNodeRoutes=true",
    )  # back to a valid file: the refusal clears
    assert res.returncode == 0, res.stdout + res.stderr
    assert not cl.agent_request(topo.name, "node1", {"op": "status"})["errors"]
