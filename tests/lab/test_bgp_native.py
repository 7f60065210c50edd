"""Issue 5 on real labs: native routing with BGP from the nodes' ExaBGP to BIRD on the routers."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from labhelpers import agent_pid, assert_all_pods_reach_each_other, capture, pod_ips, restart_agent, sh

from podnet.cli import main as podnet_main
from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.bird import RouterBgpError
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.util import netns
from podnet.verify.probe import ping

pytestmark = pytest.mark.lab

GR_SECONDS = 4
BGP = [
    "routingMode=native",
    "bgp.enabled=true",
    f"bgp.peers=[{{gracefulRestart: {{restartTimeSeconds: {GR_SECONDS}}}}}]",
]


def bgp_topo(name: str) -> Topology:
    return apply_overrides(load_topology(name), BGP)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def bird_route(topo: Topology, router: str, cidr: str) -> str:
    return sh(topo, router, "ip", "route", "show", cidr, "proto", "bird").strip()


def pod_cidrs(topo: Topology) -> dict[str, str]:
    return {
        n.name: cl.agent_request(topo.name, n.name, {"op": "status"})["node"]["podCIDRs"][0]
        for n in topo.nodes
    }


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert podnet_main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_two_subnets_native_bgp(lab_up, capsys: pytest.CaptureFixture[str]) -> None:
    topo = lab_up(bgp_topo("two-subnets"))
    wait_for(lambda: bool(bird_route(topo, "r1", "10.244.2.0/24")), 15, "r1 to learn node2's pod CIDR")
    assert "10.244.2.0/24 via 172.16.0.2 dev to-r2 proto bird" in sh(topo, "r1", "ip", "route")
    assert "10.244.1.0/24 via 172.16.2.2 dev net1 proto bird" in sh(topo, "r1", "ip", "route")
    assert "podnet_vxlan" not in sh(topo, "node1", "ip", "link")
    assert_all_pods_reach_each_other(topo)

    ips = pod_ips(topo)
    with capture(topo, "r1", "to-r2", "icmp or udp") as seen:
        assert ping(st.ns_name(topo.name, "pod1"), ips["pod2"], count=2).ok
    assert any(f"{ips['pod1']} > {ips['pod2']}: ICMP echo request" in line for line in seen), seen[:5]
    assert not any("UDP" in line or ".8472" in line for line in seen), "encapsulation seen on R1-R2"

    peers = cli_json(capsys, "bgp", "peers", "--lab", topo.name, "-o", "json")
    assert {(p["host"], p["state"]) for p in peers} == {
        ("node1", "established"), ("node2", "established"),
        ("r1", "established"), ("r2", "established"),
    }  # fmt: skip
    assert len(peers) == 6
    received = cli_json(
        capsys, "bgp", "routes", "--lab", topo.name, "--router", "r1", "--received", "-o", "json"
    )
    assert {(r["prefix"], r["nexthop"]) for r in received} == {
        ("10.244.1.0/24", "172.16.2.2"), ("10.244.2.0/24", "172.16.0.2"),
    }  # fmt: skip
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert status["bgp"]["advertised"] == ["10.244.1.0/24"]
    assert status["bgp"]["peers"][0]["receivedPrefixes"] == ["10.244.2.0/24"]

    ctl = str(st.lab_dir(topo.name) / "bird" / "r2.ctl")

    def r2_session_down() -> bool:
        out = subprocess.run(
            ["birdc", "-s", ctl, "show", "protocols", "node_node2"], capture_output=True, text=True
        )
        return "Established" not in out.stdout

    # SIGUSR1, a departure, withdraws the route everywhere
    os.kill(agent_pid(topo, "node2"), signal.SIGUSR1)
    wait_for(lambda: not bird_route(topo, "r1", "10.244.2.0/24"), 15, "r1 to drop node2's route")
    restart_agent(topo, "node2")
    wait_for(lambda: bool(bird_route(topo, "r1", "10.244.2.0/24")), 15, "r1 to learn it again")

    # SIGTERM (a restart, a DaemonSet rollout) is no departure: the session ends without a
    # NOTIFICATION, the routers keep the route for the graceful-restart time, the pods keep talking
    os.kill(agent_pid(topo, "node2"), signal.SIGTERM)
    wait_for(r2_session_down, 15, "r2 to see node2's session end")
    assert bird_route(topo, "r1", "10.244.2.0/24"), "a stopping agent's route stays (graceful restart)"
    assert ping(st.ns_name(topo.name, "pod1"), ips["pod2"], count=1).ok, "pods keep talking meanwhile"
    restart_agent(topo, "node2")
    wait_for(lambda: not r2_session_down(), 30, "node2's session to come back")
    assert bird_route(topo, "r1", "10.244.2.0/24")

    # kill -9: the session drops, the routers keep the route for the graceful-restart time
    os.kill(agent_pid(topo, "node2"), signal.SIGKILL)
    wait_for(r2_session_down, 15, "r2 to see node2's session drop")
    assert bird_route(topo, "r2", "10.244.2.0/24"), "graceful restart should keep node2's route on r2"
    assert bird_route(topo, "r1", "10.244.2.0/24"), "graceful restart should keep node2's route on r1"
    assert ping(st.ns_name(topo.name, "pod1"), ips["pod2"], count=1).ok, "pods keep talking meanwhile"
    wait_for(
        lambda: not bird_route(topo, "r1", "10.244.2.0/24"), GR_SECONDS + 30, "the stale route to expire"
    )


def test_leaf_spine_native_bgp_every_pod_reaches_every_other(lab_up) -> None:
    topo = lab_up(bgp_topo("leaf-spine"))
    cidrs = pod_cidrs(topo)
    routers = [r.name for r in topo.routers]

    def converged() -> bool:
        return all(bird_route(topo, r, c) for r in routers for c in cidrs.values())

    wait_for(converged, 30, "every router to learn every pod CIDR")
    ecmp = bird_route(topo, "leaf1", cidrs["node3"])
    assert "nexthop via 172.31.1.2" in ecmp and "nexthop via 172.31.2.2" in ecmp, ecmp
    assert_all_pods_reach_each_other(topo)


def test_bgp_peer_that_is_no_router_fails_before_anything_is_built() -> None:
    topo = apply_overrides(bgp_topo("two-subnets"), ["bgp.peers=[{peerAddress: 172.16.9.1, peerASN: 65001}]"])
    topo = dataclasses.replace(topo, name="tbad-bgp")
    with pytest.raises(RouterBgpError, match=re.escape("172.16.9.1 is not a router on node1's networks")):
        bring_up(topo)
    assert not netns.exists(st.ns_name(topo.name, "r1"))
    assert not st.lab_dir(topo.name).exists()  # not even the certificates made while validating
