"""``podnet diagnose`` follows real probes (issue 18): every fault the seeds warn about is named
with its hop and cause, from what the packets did, in at least two places or directions; a path
with nothing broken is "works", and a loss nothing on the host counts is "inconclusive", never
"works". The tunnel-filter case is the one the issue reported: r1 dropping UDP 8472 in its forward
chain used to end in "the path works both ways"."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import agent_pid, config_set, podnet_json, sh, wait_for

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.bird import birdc
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

# Legacy host routing: these faults are netfilter rules and routes on the kernel's path, which
# BPF host routing (the default) skips; diagnose's packet evidence is read there (docs/verify.md)
LEGACY = ["bpf.hostLegacyRouting=true"]
TUNNEL = ["routingMode=tunnel", *LEGACY]
DROP_UDP = Path(__file__).with_name("dropudp.c")


def _diagnose(topo: Topology, src: str, dst: str, code: int = 1) -> dict[str, Any]:
    return podnet_json("diagnose", "--lab", topo.name, src, dst, "-o", "json", code=code)


def _verdict(topo: Topology, src: str, dst: str) -> dict[str, Any]:
    doc = _diagnose(topo, src, dst)
    assert doc["status"] in ("broken", "inconclusive") and doc["verdict"], doc
    return doc


def _nft(topo: Topology, host: str, chain: str, hook: str, rule: str) -> None:
    sh(topo, host, "nft", "add", "table", "inet", "fault")
    sh(
        topo,
        host,
        "nft",
        "add",
        "chain",
        "inet",
        "fault",
        chain,
        f"{{ type filter hook {hook} priority 0 ; }}",
    )
    sh(topo, host, "nft", "add", "rule", "inet", "fault", chain, *rule.split())


def _heal(topo: Topology, *hosts: str) -> None:
    for host in hosts:
        subprocess.run(
            ["ip", "netns", "exec", st.ns_name(topo.name, host), "nft", "delete", "table", "inet", "fault"],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="module")
def _tunnel_lab() -> Iterator[Topology]:
    """One tunnel lab for the tests that take ``tunnel_lab`` (each heals what it broke)."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    topo = apply_overrides(load_topology("two-subnets"), TUNNEL)
    topo = dataclasses.replace(topo, name=f"t{secrets.token_hex(2)}-two-subnets"[:16].rstrip("-"))
    try:
        bring_up(topo)
        yield topo
    finally:
        bring_down(topo.name)


@pytest.fixture
def tunnel_lab(_tunnel_lab: Topology) -> Iterator[Topology]:
    """The module's tunnel lab; whatever a test leaves (it stopped halfway, or its last fault is
    not healed by design) is healed after it: the fault tables, r1's clsact qdisc, the router
    link's MTU."""
    topo = _tunnel_lab
    try:
        yield topo
    finally:
        _heal(topo, "r1", "r2", "node1", "node2")
        r1 = st.ns_name(topo.name, "r1")
        tc_del = ["tc", "qdisc", "del", "dev", "to-r2", "clsact"]
        subprocess.run(["ip", "netns", "exec", r1, *tc_del], capture_output=True, check=False)
        _shrink_router_link(topo, 1500)


def _shrink_router_link(topo: Topology, mtu: int) -> None:
    for host, dev in (("r1", "to-r2"), ("r2", "to-r1")):
        sh(topo, host, "ip", "link", "set", dev, "mtu", str(mtu))


def test_an_mtu_black_hole_is_named_on_a_router_link_and_on_a_segment(
    lab_up: Callable[..., Topology],
) -> None:
    """Native routing with BGP: pod packets carry DF. The routers' link shrinks and r1 does not
    tell the sender (ICMP filtered); then, the other way, node2's port on its segment shrinks."""
    topo = lab_up(
        apply_overrides(load_topology("two-subnets"), ["routingMode=native", "bgp.enabled=true", *LEGACY])
    )
    assert _diagnose(topo, "pod1", "pod2", code=0)["status"] == "works"
    _shrink_router_link(topo, 1400)
    _nft(topo, "r1", "out", "output", "icmp type destination-unreachable drop")
    doc = _verdict(topo, "pod1", "pod2")
    assert (doc["verdict"]["host"], doc["verdict"]["kind"]) == ("r1", "mtu"), doc["verdict"]
    assert doc["probe"]["answered"] == {"small": True, "fullSize": False}, doc["probe"]
    _heal(topo, "r1")
    _shrink_router_link(topo, 1500)
    sh(topo, "sw-net2", "ip", "link", "set", "node2", "mtu", "1400")
    back = _verdict(topo, "pod2", "pod1")
    assert back["verdict"]["kind"] == "mtu" and "net2" in back["verdict"]["reason"], back["verdict"]
    assert back["probe"]["answered"] == {"small": True, "fullSize": False}, back["probe"]


def test_routers_without_the_pod_routes_and_direct_routes_behind_a_gateway(
    lab_up: Callable[..., Topology],
) -> None:
    # native routing without BGP: the routers know no pod CIDR
    topo = lab_up(apply_overrides(load_topology("two-subnets"), ["routingMode=native", *LEGACY]))
    forward = _verdict(topo, "pod1", "pod2")["verdict"]
    assert (forward["host"], forward["kind"]) == ("r1", "no-route"), forward
    back = _verdict(topo, "pod2", "pod1")["verdict"]
    assert (back["host"], back["kind"]) == ("r2", "no-route"), back
    res = config_set(topo.name, "autoDirectNodeRoutes=true")
    assert res.returncode == 0, res.stdout + res.stderr
    for src, dst, peer in (("pod1", "pod2", "node2"), ("pod2", "pod1", "node1")):
        verdict = _verdict(topo, src, dst)["verdict"]
        assert verdict["kind"] == "no-route" and "autoDirectNodeRoutes" in verdict["reason"], verdict
        assert f"assumes {peer} shares" in verdict["reason"] and "tunnel" in verdict["fix"], verdict


def test_a_bgp_session_down_is_named_as_the_reason_routers_lack_the_route(
    lab_up: Callable[..., Topology],
) -> None:
    """Native routing with BGP: r2 disables its session with node2 (then r1 with node1): the
    router on the way has no route, and the verdict says which BGP session is down."""
    topo = lab_up(
        apply_overrides(load_topology("two-subnets"), ["routingMode=native", "bgp.enabled=true", *LEGACY])
    )
    works = _diagnose(topo, "pod1", "pod2", code=0)
    assert works["status"] == "works" and works["probe"]["tcp"]["ok"], works["probe"]
    # a filter that drops only TCP lets every echo through: the TCP probe finds it, on a router
    # and on the receiving node
    for host, chain, rule in (
        ("r1", "fwdc", "meta l4proto tcp drop"),
        ("node2", "fwdn", 'oifname "lxc*" meta l4proto tcp drop'),
    ):
        _nft(topo, host, chain, "forward", rule)
        doc = _verdict(topo, "pod1", "pod2")
        assert doc["probe"]["answered"] == {"small": True, "fullSize": True}, doc["probe"]
        assert (doc["verdict"]["host"], doc["verdict"]["kind"]) == (host, "filter"), doc["verdict"]
        assert "TCP" in doc["verdict"]["reason"] and "l4proto tcp drop" in doc["verdict"]["reason"], doc[
            "verdict"
        ]
        _heal(topo, host)
    for router, node, src, dst in (("r2", "node2", "pod1", "pod2"), ("r1", "node1", "pod2", "pod1")):
        birdc(topo.name, router, "disable", f"node_{node}")
        try:
            doc = _verdict(topo, src, dst)
            verdict = doc["verdict"]
            assert verdict["kind"] == "no-route" and "BGP session" in verdict["reason"], verdict
            assert f"{node} ->" in verdict["reason"] and "179" in verdict["fix"], verdict
            assert any(w.startswith(f"BGP session {node} ->") for w in doc["warnings"]), doc["warnings"]
        finally:
            birdc(topo.name, router, "enable", f"node_{node}")
        wait_for(
            lambda s=src, d=dst: _diagnose(topo, s, d, code=None)["status"] == "works", "the route back", 60
        )


# the tunnel lab's tests last: the module's one tunnel lab is up only while they run


def test_a_filter_on_the_tunnel_protocol_is_named_where_it_is(tunnel_lab: Topology) -> None:
    topo = tunnel_lab
    works = _diagnose(topo, "pod1", "pod2", code=0)
    assert works["status"] == "works" and works["verdict"] is None, works  # no false alarm
    assert works["probe"]["answered"] == {"small": True, "fullSize": True}

    # the issue's fault: r1's forward chain drops UDP 8472
    _nft(topo, "r1", "fwdc", "forward", "udp dport 8472 drop")
    doc = _verdict(topo, "pod1", "pod2")
    verdict = doc["verdict"]
    assert (verdict["host"], verdict["kind"]) == ("r1", "filter"), verdict
    assert "udp dport 8472 drop" in verdict["reason"] and "VXLAN (UDP 8472)" in verdict["reason"], verdict
    assert "8472" in verdict["fix"], verdict
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json", code=1)
    failed = [c for c in report["results"] if c["status"] == "fail"]
    assert failed and all((c["stoppedAt"] or {}).get("host") == "r1" for c in failed), failed
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json", code=None)
    peer = status["nodes"]["node1"]["peers"][0]
    assert peer["health"] == "unreachable" and "answers on the underlay" in peer["healthDetail"], peer
    # the agent's own probes (what a real host's status shows) find the same, after a SIGHUP
    os.kill(agent_pid(topo, "node1"), signal.SIGHUP)

    def pod_side_down() -> bool:
        side = cl.agent_request(topo.name, "node1", {"op": "status"})["pathMTU"].get("podSide") or {}
        return side.get("node2", {}).get("ok") is False

    wait_for(pod_side_down, "node1's agent to find node2's pod side unreachable", 20)
    _heal(topo, "r1")

    # the receiving node's input chain
    _nft(topo, "node2", "inp", "input", "udp dport 8472 drop")
    verdict = _verdict(topo, "pod1", "pod2")["verdict"]
    assert (verdict["host"], verdict["kind"]) == ("node2", "filter"), verdict
    _heal(topo, "node2")

    # one direction only: r2 drops what node2 sends; pod1 -> pod2 loses the echo reply at r2
    node2 = str(next(h for h in topo.nodes if h.name == "node2").primary.ip)
    _nft(topo, "r2", "fwdc", "forward", f"ip saddr {node2} udp dport 8472 drop")
    doc = _verdict(topo, "pod1", "pod2")
    assert (doc["verdict"]["host"], doc["verdict"]["kind"]) == ("r2", "filter"), doc["verdict"]
    assert "echo reply" in doc["verdict"]["reason"], doc["verdict"]
    assert doc["probe"]["answered"]["small"] is False
    back = _verdict(topo, "pod2", "pod1")["verdict"]
    assert (back["host"], back["kind"]) == ("r2", "filter") and "echo reply" not in back["reason"], back
    _heal(topo, "r2")
    assert _diagnose(topo, "pod1", "pod2", code=0)["status"] == "works"


def test_a_tc_program_dropping_is_named_by_its_qdiscs_counter(tunnel_lab: Topology, tmp_path: Path) -> None:
    """A tc program dropping UDP on r1's link from r2: nft, the kernel's counters and the
    interface's counters see nothing; the clsact qdisc it hangs on counts its drops. The verdict
    names r1, the device and the tc filters (before qdisc counters were read: inconclusive)."""
    topo = tunnel_lab
    obj = tmp_path / "dropudp.o"
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    argv = ["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{multiarch}", "-c", str(DROP_UDP)]
    subprocess.run([*argv, "-o", str(obj)], check=True, capture_output=True)
    sh(topo, "r1", "tc", "qdisc", "add", "dev", "to-r2", "clsact")
    attach = ["tc", "filter", "add", "dev", "to-r2", "ingress", "pref", "7", "bpf", "da"]
    sh(topo, "r1", *attach, "obj", str(obj), "sec", "tc")
    doc = _verdict(topo, "pod1", "pod2")
    verdict = doc["verdict"]
    assert doc["status"] == "broken" and verdict["kind"] == "tc-filter", verdict
    assert verdict["host"] == "r1" and "to-r2" in verdict["reason"], verdict
    assert "tc -n" in verdict["fix"] and "filter show dev to-r2" in verdict["fix"], verdict
    sh(topo, "r1", "tc", "qdisc", "del", "dev", "to-r2", "clsact")
    assert _diagnose(topo, "pod1", "pod2", code=0)["status"] == "works"


def test_a_smaller_router_link_fragments_the_tunnel_and_says_so(tunnel_lab: Topology) -> None:
    """VXLAN's outer packets carry no DF: a smaller link mid-path fragments them. The probe comes
    back, so the verdict is "degraded" with the link named, not "dropped" and not "works"."""
    topo = tunnel_lab
    _shrink_router_link(topo, 1400)
    doc = _diagnose(topo, "pod1", "pod2")
    assert doc["status"] == "degraded", doc
    assert (doc["verdict"]["host"], doc["verdict"]["kind"]) == ("r1", "fragmented"), doc["verdict"]
    assert "to-r2" in doc["verdict"]["reason"] and doc["probe"]["answered"]["fullSize"] is True
