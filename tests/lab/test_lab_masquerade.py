"""Issue 6: nftables masquerading inside node namespaces only, with Cilium's exemptions."""

from __future__ import annotations

import json
import subprocess

import pytest

from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import load_topology
from podnet.verify.probe import tcp_probe

pytestmark = pytest.mark.lab

WORLD = "203.0.113.10"


def pod_ip(topo, pod: str) -> str:  # type: ignore[no-untyped-def]
    state = st.LabState.load(topo.name)
    assert state is not None
    return state.info["podIPs"][pod]["ips"][0]


def nft_tables(ns: str | None) -> list[str]:
    argv = ["nft", "-j", "list", "tables"]
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [t["table"]["name"] for t in json.loads(out)["nftables"] if "table" in t]


def test_pod_to_world_leaves_with_the_node_address_and_pod_to_pod_keeps_it(lab_up) -> None:
    topo = lab_up(load_topology("two-subnets"))
    ns = lambda h: st.ns_name(topo.name, h)  # noqa: E731
    to_world = tcp_probe(ns("pod1"), ns("world"), WORLD)
    assert to_world.ok, to_world.detail
    assert "seen from 172.16.2.2" in to_world.detail  # node1's underlay address
    to_pod = tcp_probe(ns("pod1"), ns("pod2"), pod_ip(topo, "pod2"))
    assert to_pod.ok and f"seen from {pod_ip(topo, 'pod1')}" in to_pod.detail
    to_node = tcp_probe(ns("pod1"), ns("node2"), "172.16.3.2")
    assert to_node.ok and f"seen from {pod_ip(topo, 'pod1')}" in to_node.detail  # nodes are exempt
    for node in ("node1", "node2"):
        assert "podnet" in nft_tables(ns(node))
    for other in ("r1", "world", "pod1"):
        assert "podnet" not in nft_tables(ns(other))
    assert "podnet" not in nft_tables(None)  # never in the machine's own namespace


def test_without_masquerading_the_world_cannot_answer_pods(lab_up) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), ["enableIPv4Masquerade=false"]))
    ns = lambda h: st.ns_name(topo.name, h)  # noqa: E731
    assert "podnet" not in nft_tables(ns("node1"))
    res = tcp_probe(ns("pod1"), ns("world"), WORLD, timeout=1.0)
    assert not res.ok  # R1 knows no route back to 10.244.1.0/24
