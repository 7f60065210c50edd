"""Issue 3 on the real datapath: agents, operator and CNI in lab clusters, per routing mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from labhelpers import assert_all_pods_reach_each_other, capture, pod_ips, sh

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_up
from podnet.lab.topology import Pod, Topology, load_topology
from podnet.verify.probe import ping, tcp_probe

pytestmark = pytest.mark.lab

TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
NATIVE = ["routingMode=native", "autoDirectNodeRoutes=true", "ipv4NativeRoutingCIDR=10.244.0.0/16"]


def topo_with(name: str, settings: list[str]) -> Topology:
    return apply_overrides(load_topology(name), settings)


def test_l2_tunnel_pods_reach_each_other_over_vxlan(lab_up) -> None:
    topo = lab_up(topo_with("l2", TUNNEL))
    assert_all_pods_reach_each_other(topo)
    ips = pod_ips(topo)
    # the pods' default route carries the route MTU: 1500 underlay - 50 VXLAN
    assert "mtu 1450" in sh(topo, "node1-p1", "ip", "route", "show", "default")
    src, dst = ips["node1-p1"], ips["node2-p1"]
    with capture(topo, "node1", "eth0", "udp port 8472") as seen:
        assert ping(st.ns_name(topo.name, "node1-p1"), dst, count=2).ok
    carried = [line for line in seen if f"{src} > {dst}" in line]
    assert carried, f"no VXLAN packet carrying {src} -> {dst} on node1 eth0: {seen[:5]}"
    # tcpdump prints the outer header (node to node, UDP 8472) on the line before the inner one
    outer = [seen[i - 1] for i, line in enumerate(seen) if f"{src} > {dst}" in line and i > 0]
    assert outer and all("192.168.1.10." in o and ".8472: " in o for o in outer), outer


def test_l2_native_direct_routes_and_no_encapsulation(lab_up) -> None:
    topo = lab_up(topo_with("l2", NATIVE))
    status = {n.name: cl.agent_request(topo.name, n.name, {"op": "status"}) for n in topo.nodes}
    node_ip = {n.name: str(n.primary.address.ip) for n in topo.nodes}
    for node in topo.nodes:
        routes = sh(topo, node.name, "ip", "route", "show", "proto", "201")
        for peer in topo.nodes:
            if peer.name == node.name:
                continue
            cidr = status[peer.name]["node"]["podCIDRs"][0]
            assert f"{cidr} via {node_ip[peer.name]} dev eth0" in routes, routes
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
    assert_all_pods_reach_each_other(topo)
    ips = pod_ips(topo)
    src, dst = ips["node1-p1"], ips["node3-p1"]
    with capture(topo, "node1", "eth0", "icmp or udp port 8472") as seen:
        assert ping(st.ns_name(topo.name, "node1-p1"), dst, count=2).ok
    assert any(f"{src} > {dst}: ICMP echo request" in line for line in seen), seen[:5]
    assert not any(".8472" in line for line in seen), "VXLAN seen in native mode"


def test_two_subnets_tunnel_crosses_the_routers(lab_up) -> None:
    topo = lab_up(topo_with("two-subnets", TUNNEL))
    assert_all_pods_reach_each_other(topo)


def test_two_subnets_native_reports_the_unreachable_peer(lab_up) -> None:
    topo = lab_up(topo_with("two-subnets", NATIVE))
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert status["ready"] is True
    peer = next(p for p in status["peers"] if p["name"] == "node2")
    text = " ".join(peer["issues"])
    assert "172.16.3.2" in text and "gateway 172.16.2.1" in text and "directly reachable" in text
    assert "10.244.2.0/24" not in sh(topo, "node1", "ip", "route")
    # the agents keep running; the pods' traffic dies at R1 (no underlay route): the seeds' problem
    assert not ping(st.ns_name(topo.name, "pod1"), pod_ips(topo)["pod2"]).ok
    state = st.LabState.load(topo.name)
    assert state is not None and all(p.running() for p in state.processes)


def test_agent_kill_9_keeps_pod_traffic_and_restart_changes_nothing(lab_up) -> None:
    topo = lab_up(topo_with("two-subnets", TUNNEL))
    ips = pod_ips(topo)
    routes_before = sh(topo, "node1", "ip", "route")
    neigh_before = sh(topo, "node1", "ip", "neigh", "show", "dev", "podnet_vxlan")
    state = st.LabState.load(topo.name)
    assert state is not None
    agent = state.process("agent-node1")
    assert agent is not None
    os.kill(agent.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while agent.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not agent.running(), f"agent-node1 (pid {agent.pid}) survived SIGKILL for 10s"
    # while node1's agent is down, its pod still talks to the other node's pod both ways
    assert tcp_probe(st.ns_name(topo.name, "pod1"), st.ns_name(topo.name, "pod2"), ips["pod2"]).ok
    assert tcp_probe(st.ns_name(topo.name, "pod2"), st.ns_name(topo.name, "pod1"), ips["pod1"]).ok
    report = bring_up(topo)  # restarts only the dead agent
    assert report.changes == 1
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert status["ready"] and status["ipam"]["allocations"]  # pod1's address restored from its record
    assert sh(topo, "node1", "ip", "route") == routes_before
    assert sh(topo, "node1", "ip", "neigh", "show", "dev", "podnet_vxlan") == neigh_before
    assert tcp_probe(st.ns_name(topo.name, "pod1"), st.ns_name(topo.name, "pod2"), ips["pod2"]).ok


def test_failed_cni_add_leaves_nothing_and_del_twice_succeeds(lab_up) -> None:
    topo = lab_up(topo_with("two-subnets", TUNNEL))
    links_before = sh(topo, "node1", "ip", "-o", "link")
    status_before = cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["used"]
    ghost = Pod("ghost", "node1")  # its namespace was never made: a bad netns path
    code, out = cl.run_cni(topo.name, ghost, "ADD")
    assert code != 0 and out["code"] == 101 and out["cniVersion"] == cl.CNI_VERSION and out["msg"]
    assert sh(topo, "node1", "ip", "-o", "link") == links_before
    assert cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["used"] == status_before
    assert cl.run_cni(topo.name, ghost, "DEL")[0] == 0
    pod1 = Pod("pod1", "node1")
    assert cl.run_cni(topo.name, pod1, "DEL")[0] == 0
    assert cl.run_cni(topo.name, pod1, "DEL")[0] == 0
    assert "lxc" not in sh(topo, "node1", "ip", "-o", "link")
    assert cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["used"] == status_before - 1


def test_malformed_netconf_gets_the_spec_error(lab_up) -> None:
    topo = lab_up(topo_with("l2", TUNNEL), cluster=False)
    cl.ensure_cni_installed(topo.name)
    res = subprocess.run(
        [cl.cni_binary(topo.name)],
        input="{not json",
        capture_output=True,
        text=True,
        env={
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "x",
            "CNI_NETNS": "/run/netns/none",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin",
        },
        timeout=30,
    )
    assert res.returncode != 0
    err = json.loads(res.stdout)
    assert err["code"] == 6 and "decode" in err["msg"]
