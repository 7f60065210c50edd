"""Geneve in tc-BPF (issue 17): this kernel has no geneve driver, so the encapsulation is two
programs the agent attaches. Pods reach each other through it, tcpdump (not podnet) decodes the
wire as Geneve on 6081, a Geneve packet from a stranger is dropped, a live switch between VXLAN
and Geneve keeps a TCP connection, the hybrid mode tunnels across the router with Geneve, an
agent killed with -9 leaves the programs (and traffic) in place and its successor keeps them,
and a switch away removes every program podnet attached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from labhelpers import (
    Stream,
    agent_pid,
    assert_all_pods_reach_each_other,
    capture,
    config_set,
    pod_ips,
    podnet_json,
    restart_agent,
    sh,
    wait_for,
)

from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

GENEVE = ["routingMode=tunnel", "autoDirectNodeRoutes=false", "tunnelProtocol=geneve"]
RAWSEND = str(Path(__file__).with_name("rawsend.py"))


def _bpf(topo: Topology, node: str) -> dict[str, object]:
    report = podnet_json("status", "--lab", topo.name, "--node", node, "-o", "json")
    return report["nodes"][node]["bpf"]  # type: ignore[no-any-return]


def _prog_ids(topo: Topology, node: str) -> set[int]:
    return {int(p["id"]) for p in _bpf(topo, node)["programs"]}  # type: ignore[attr-defined,index]


def test_geneve_tunnel_connectivity_wire_and_strangers(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), GENEVE))
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"], report
    ips = pod_ips(topo)
    with capture(topo, "node2", "eth0", "udp port 6081") as wire:  # tcpdump's own Geneve decoder
        sh(topo, "node1-p1", "ping", "-c", "2", "-W", "1", ips["node2-p1"])
    assert any("192.168.1.10." in line and "> 192.168.1.11.6081: Geneve" in line and "vni 0x1" in line
               for line in wire), wire  # fmt: skip
    assert any(f"{ips['node1-p1']} > {ips['node2-p1']}: ICMP echo request" in line for line in wire), wire
    seen = podnet_json("capture", "--lab", topo.name, "--on", "node2:eth0", "-o", "json")
    assert seen["kind"] == "geneve" and "Geneve UDP/6081 carrying" in seen["saw"], seen
    bpf = _bpf(topo, "node1")
    assert bpf["peers"] == 2 and bpf["allowed"] == 2, bpf
    hooks = {(p["dev"], p["hook"]) for p in bpf["programs"]}  # type: ignore[attr-defined]
    assert hooks == {("podnet_geneve", "egress"), ("eth0", "ingress")}, bpf
    # a Geneve packet from the control plane (no peer) carrying a ping to a pod is dropped
    before = bpf["counters"]["denied"]  # type: ignore[index]
    with capture(topo, "node1-p1", "eth0", "icmp") as inside:
        sh(topo, "cp", sys.executable, RAWSEND, "geneve", "192.168.1.10", "10.244.9.9", ips["node1-p1"], "5")
    assert not any("10.244.9.9" in line for line in inside), inside
    assert _bpf(topo, "node1")["counters"]["denied"] >= before + 5  # type: ignore[index]
    diag = podnet_json("diagnose", "--lab", topo.name, "node1-p1", "node2-p1", "-o", "json")
    encap = next(h for h in diag["forward"]["hops"] if h["action"] == "encap")
    assert "geneve-encap-" in encap["kernel"] and "Geneve 192.168.1.10 -> 192.168.1.11" in encap["kernel"], (
        diag
    )


def test_live_switch_between_vxlan_and_geneve_keeps_a_connection(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"]))
    ips = pod_ips(topo)
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node2-p1"), ips["node2-p1"])
    try:
        stream.exchange()
        for protocol, device, gone in (("geneve", "podnet_geneve", "podnet_vxlan"),
                                       ("vxlan", "podnet_vxlan", "podnet_geneve")):  # fmt: skip
            res = config_set(topo.name, f"tunnelProtocol={protocol}")
            assert res.returncode == 0, res.stdout + res.stderr
            links = sh(topo, "node1", "ip", "link")
            assert device in links and gone not in links, links
            stream.exchange()
        filters = sh(topo, "node1", "tc", "filter", "show", "dev", "eth0", "ingress")
        assert "geneve-decap" not in filters, filters  # Geneve's program went with Geneve
    finally:
        stream.close()
    assert_all_pods_reach_each_other(topo)


def test_hybrid_tunnels_across_the_router_with_geneve(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("mixed"), ["tunnelProtocol=geneve"]))
    assert_all_pods_reach_each_other(topo)
    ips = pod_ips(topo)
    with capture(topo, "node1", "eth0", "icmp or udp port 6081") as seen:
        for dst in (ips["node2-p1"], ips["node3-p1"]):
            sh(topo, "node1-p1", "ping", "-c", "2", "-W", "1", dst)
    to_l2 = [line for line in seen if f"{ips['node1-p1']} > {ips['node2-p1']}: ICMP" in line]
    to_routed = [line for line in seen if f"{ips['node1-p1']} > {ips['node3-p1']}: ICMP" in line]
    assert to_l2 and to_routed, seen[:8]
    assert not any("Geneve" in line for line in to_l2), to_l2  # plain on the L2 (tcpdump: one line
    assert all("Geneve" in line for line in to_routed), to_routed  # per packet, inner after outer)


def test_agent_kill9_keeps_programs_and_traffic(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), GENEVE))
    ips = pod_ips(topo)
    before = _prog_ids(topo, "node1")
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node2-p1"), ips["node2-p1"])
    try:
        stream.exchange()
        os.kill(agent_pid(topo, "node1"), signal.SIGKILL)
        restart_pending = True
        try:
            stream.exchange()  # while node1 has no agent: its programs keep encapsulating
            ping = ["ip", "netns", "exec", st.ns_name(topo.name, "node1-p1"), "ping", "-c", "3", "-i", "0.2"]
            res = subprocess.run([*ping, "-W", "1", ips["node3-p1"]], capture_output=True, text=True)
            assert res.returncode == 0, res.stdout
            restart_agent(topo, "node1")
            restart_pending = False
        finally:
            if restart_pending:
                restart_agent(topo, "node1")
        wait_for(lambda: _prog_ids(topo, "node1") == before, "node1's programs to be listed again", 15)
        assert _bpf(topo, "node1")["peers"] == 2  # the same maps, still full
        stream.exchange()
    finally:
        stream.close()
    # switching away removes podnet's programs; the kernel frees them and their maps
    res = config_set(topo.name, "routingMode=native", "autoDirectNodeRoutes=true")
    assert res.returncode == 0, res.stdout + res.stderr
    filters = sh(topo, "node1", "tc", "filter", "show", "dev", "eth0", "ingress")
    assert "geneve-" not in filters, filters  # (BPF host routing's own program stays, at pref 50)
    for prog in before:
        assert (
            subprocess.run(["bpftool", "prog", "show", "id", str(prog)], capture_output=True).returncode != 0
        )
    assert_all_pods_reach_each_other(topo)
