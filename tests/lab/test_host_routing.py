"""BPF host routing (issue 17, ``bpf.hostLegacyRouting: false``): pod packets skip the node's IP
stack (redirect_peer to a pod on the node, fib lookup + redirect to a pod elsewhere, natively or
into VXLAN/Geneve), the connectivity test passes with it on and off, a live switch keeps a TCP
connection, and what the program declines (spoofed sources, the world) still meets the kernel's
guard and masquerading."""

from __future__ import annotations

import dataclasses
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
    capture,
    config_set,
    pod_ips,
    podnet_json,
    restart_agent,
    sh,
    wait_for,
)

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology
from podnet.lab.topomodel import Pod

pytestmark = pytest.mark.lab

BPF = ["bpf.hostLegacyRouting=false"]
RAWSEND = str(Path(__file__).with_name("rawsend.py"))


def _hr(topo: Topology, node: str) -> dict[str, object]:
    return cl.agent_request(topo.name, node, {"op": "status"})["hostRouting"]  # type: ignore[no-any-return]


def _counters(topo: Topology, node: str) -> dict[str, int]:
    return _hr(topo, node).get("counters") or {}  # type: ignore[return-value]


def _ping(topo: Topology, pod: str, dst: str) -> None:
    sh(topo, pod, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst)


def _all_veths_programmed(topo: Topology, node: str, pods: int) -> bool:
    return len(_hr(topo, node).get("devices") or []) == pods  # type: ignore[arg-type]


def test_bpf_host_routing_natively_on_one_l2(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), BPF))
    wait_for(lambda: _all_veths_programmed(topo, "node1", 2), "node1's two pod veths to be programmed", 20)
    ips = pod_ips(topo)
    _ping(topo, "node1-p1", ips["node1-p2"])  # learns both pods' MACs, then redirect_peer
    _ping(topo, "node1-p2", ips["node1-p1"])
    before = _counters(topo, "node1")
    _ping(topo, "node1-p1", ips["node1-p2"])
    _ping(topo, "node1-p1", ips["node2-p1"])
    after = _counters(topo, "node1")
    assert after["redirectPeer"] >= before["redirectPeer"] + 3, (before, after)
    assert (
        after["redirectFib"] + after["redirectNeigh"] >= before["redirectFib"] + before["redirectNeigh"] + 3
    )
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"], report
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
    assert status["nodes"]["node1"]["hostRouting"]["mode"] == "BPF"
    diag = podnet_json("diagnose", "--lab", topo.name, "node1-p1", "node1-p2", "-o", "json")
    node_hop = next(h for h in diag["forward"]["hops"] if h["host"] == "node1")
    assert "BPF host routing" in node_hop["kernel"] and "redirect_peer" in node_hop["kernel"], diag
    # kill -9: the program stays on the veths and keeps redirecting; the next agent keeps it
    program = _hr(topo, "node1")["program"]
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node1-p2"), ips["node1-p2"])
    try:
        os.kill(agent_pid(topo, "node1"), signal.SIGKILL)
        try:
            stream.exchange()
        finally:
            restart_agent(topo, "node1")
        assert _hr(topo, "node1")["program"] == program
        stream.exchange()
    finally:
        stream.close()
    # a spoofed source is not the pod's: the program leaves it to the kernel, whose guard drops it
    spoof = [sys.executable, RAWSEND, "udp", "10.244.77.7", ips["node2-p1"], "9999", "5"]
    with capture(topo, "node2-p1", "eth0", "udp port 9999") as seen:
        sh(topo, "node1-p1", *spoof)
    assert not any("10.244.77.7" in line for line in seen), seen


def test_live_switch_between_bpf_and_legacy_host_routing_keeps_a_connection(
    lab_up: Callable[..., Topology],
) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["bpf.hostLegacyRouting=true"]))
    assert _hr(topo, "node1")["mode"] == "Legacy"
    ips = pod_ips(topo)
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node1-p2"), ips["node1-p2"])
    remote = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node3-p1"), ips["node3-p1"])
    try:
        for legacy in ("false", "true", "false"):
            res = config_set(topo.name, f"bpf.hostLegacyRouting={legacy}")
            assert res.returncode == 0, res.stdout + res.stderr
            if legacy == "false":
                wait_for(lambda: _all_veths_programmed(topo, "node1", 2), "node1's pod veths programmed", 20)
            else:
                filters = sh(topo, "node1", "tc", "filter", "show", "dev", "podnet_net", "ingress")
                assert filters.strip() == "", filters  # Legacy: every host-routing filter is gone
            for s in (stream, remote):
                s.exchange()
        counters = _counters(topo, "node1")
        assert counters["redirectPeer"] > 0 and counters["redirectFib"] + counters["redirectNeigh"] > 0, (
            counters
        )
    finally:
        stream.close()
        remote.close()


def test_bpf_host_routing_into_the_geneve_encapsulation(lab_up: Callable[..., Topology]) -> None:
    sets = ["routingMode=tunnel", "autoDirectNodeRoutes=false", "tunnelProtocol=geneve", *BPF]
    topo = lab_up(apply_overrides(load_topology("l2"), sets))
    wait_for(lambda: _all_veths_programmed(topo, "node1", 2), "node1's two pod veths to be programmed", 20)
    ips = pod_ips(topo)
    before = _counters(topo, "node1")
    with capture(topo, "node2", "eth0", "udp port 6081") as wire:
        _ping(topo, "node1-p1", ips["node2-p1"])
    assert any("Geneve" in line and f"{ips['node1-p1']} > {ips['node2-p1']}" in line for line in wire), wire
    after = _counters(topo, "node1")
    assert after["encapsulated"] >= before["encapsulated"] + 3, (before, after)  # not via podnet_geneve
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"], report


def _decap(topo: Topology, node: str) -> dict[str, int]:
    decaps = _hr(topo, node).get("decap") or []
    assert len(decaps) == 1 and decaps[0]["dev"] == "eth0", decaps  # type: ignore[index]
    return decaps[0]["counters"]  # type: ignore[index,no-any-return]


def _decap_filters(topo: Topology, node: str) -> str:
    return sh(topo, node, "tc", "filter", "show", "dev", "eth0", "ingress", "pref", "48")


def test_bpf_host_routing_does_vxlan_itself_and_the_kernel_device_still_understands_it(
    lab_up: Callable[..., Topology],
) -> None:
    """VXLAN with BPF host routing: node1's program writes the VXLAN header itself, node2's decap
    program strips it; with node2's program gone its kernel VXLAN device reads the same packets
    (a decoder podnet did not write), and a VXLAN packet from a host that is no peer is dropped."""
    sets = ["routingMode=tunnel", "autoDirectNodeRoutes=false", "tunnelProtocol=vxlan", *BPF]
    topo = lab_up(apply_overrides(load_topology("l2"), sets))
    wait_for(lambda: _all_veths_programmed(topo, "node1", 2), "node1's two pod veths to be programmed", 20)
    wait_for(lambda: "vxlan-decap" in _decap_filters(topo, "node2"), "node2's VXLAN decap program", 20)
    ips = pod_ips(topo)
    sent, received = _counters(topo, "node1"), _decap(topo, "node2")
    _ping(topo, "node1-p1", ips["node2-p1"])
    assert _counters(topo, "node1")["encapsulated"] >= sent["encapsulated"] + 3
    assert _decap(topo, "node2")["decapsulated"] >= received["decapsulated"] + 3
    # the kernel's VXLAN device on node2 decodes what node1's program wrote
    sh(topo, "node2", "tc", "filter", "del", "dev", "eth0", "ingress", "pref", "48")
    assert "vxlan-decap" not in _decap_filters(topo, "node2")
    sent = _counters(topo, "node1")
    _ping(topo, "node1-p1", ips["node2-p1"])
    assert _counters(topo, "node1")["encapsulated"] >= sent["encapsulated"] + 3
    wait_for(lambda: "vxlan-decap" in _decap_filters(topo, "node2"), "the next round to re-attach", 20)
    # a VXLAN packet from the control-plane host (no peer) is dropped by the program and counted
    denied = _decap(topo, "node2")["denied"]
    node2 = next(h for h in topo.nodes if h.name == "node2").primary.ip
    sh(
        topo,
        topo.control_plane.name,
        sys.executable,
        RAWSEND,
        "vxlan",
        str(node2),
        "10.244.77.7",
        ips["node2-p1"],
        "3",
    )
    wait_for(lambda: _decap(topo, "node2")["denied"] >= denied + 3, "the foreign VXLAN packets denied", 10)
    # a connection across the tunnel survives node2's agent kill -9 and a switch to Legacy, which
    # takes the decap program away again
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node2-p1"), ips["node2-p1"])
    try:
        os.kill(agent_pid(topo, "node2"), signal.SIGKILL)
        try:
            stream.exchange()
        finally:
            restart_agent(topo, "node2")
        res = config_set(topo.name, "bpf.hostLegacyRouting=true")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(
            lambda: _decap_filters(topo, "node2").strip() == "", "Legacy to remove the decap program", 20
        )
        stream.exchange()
    finally:
        stream.close()
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"], report


def _v6(topo: Topology, pod: str) -> str:
    state = st.LabState.load(topo.name)
    assert state is not None
    return next(ip for ip in state.info["podIPs"][pod]["ips"] if ":" in ip)


@pytest.mark.parametrize("mode", ["native", "tunnel"])
def test_bpf_host_routing_takes_ipv6_too(lab_up: Callable[..., Topology], mode: str) -> None:
    """Dual stack: IPv6 pod packets are redirected into a pod on the node (redirect_peer), and to
    a pod elsewhere natively (fib lookup) or into the IPv4 underlay's VXLAN by the program."""
    sets = [*BPF, *(["routingMode=tunnel", "autoDirectNodeRoutes=false"] if mode == "tunnel" else [])]
    base = load_topology("dual-stack")
    extra = Pod("p2", "node1")
    topo = lab_up(apply_overrides(dataclasses.replace(base, pods=(*base.pods, extra)), sets))
    wait_for(lambda: _all_veths_programmed(topo, "node1", 2), "node1's two pod veths to be programmed", 20)
    local = next(p.name for p in topo.pods if p.node == "node1" and p.name != "p2")
    remote = next(p.name for p in topo.pods if p.node == "node2")

    def answers(a: str, b: str) -> bool:
        argv = [
            "ip",
            "netns",
            "exec",
            st.ns_name(topo.name, a),
            "ping",
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
        ]
        return subprocess.run([*argv, _v6(topo, b)], capture_output=True, check=False).returncode == 0

    for a, b in ((local, "p2"), ("p2", local), (local, remote)):  # also learns the pods' MACs
        wait_for(lambda a=a, b=b: answers(a, b), f"{a} to reach {b} over IPv6", 20)
    before = _counters(topo, "node1")
    sh(topo, local, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", _v6(topo, "p2"))
    sh(topo, local, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "1", _v6(topo, remote))
    after = _counters(topo, "node1")
    assert after["redirectPeer"] >= before["redirectPeer"] + 3, (before, after)
    away = "encapsulated" if mode == "tunnel" else "redirectFib"
    assert after[away] + after["redirectNeigh"] >= before[away] + before["redirectNeigh"] + 3, (before, after)
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"], report
