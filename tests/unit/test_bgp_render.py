"""Pure BGP pieces: ExaBGP and BIRD configs from the topology, the relay's events, birdc parsing."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from podnet.bgp.birdc import parse_protocols, parse_routes
from podnet.bgp.exabgp import SpeakerSpec, render_config
from podnet.bgp.relay import apply_event
from podnet.config.bgp import BgpPeer
from podnet.lab.bird import RouterBgpError, node_configs, plan_router_bgp, render_bird_config
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology
from podnet.verify.bgp import node_peer_rows, node_route_rows, render_table

BGP = ["routingMode=native", "ipv4NativeRoutingCIDR=10.244.0.0/16", "bgp.enabled=true"]


def topo(name: str, extra: list[str] | None = None) -> Topology:
    return apply_overrides(load_topology(name), BGP + (extra or []))


def test_exabgp_config_announces_pod_cidrs_to_each_peer() -> None:
    spec = SpeakerSpec(
        ipaddress.IPv4Address("172.16.2.2"), ipaddress.IPv4Address("172.16.2.2"), 64512,
        (BgpPeer(ipaddress.IPv4Address("172.16.2.1"), 65001, password="pw", restart_time=5),),
        (ipaddress.IPv4Network("10.244.1.0/24"),), Path("/tmp/x"),
    )  # fmt: skip
    text = render_config(spec, ["/py", "-m", "podnet.bgp.relay", "/tmp/x"])
    assert "run /py -m podnet.bgp.relay /tmp/x;" in text
    assert "neighbor 172.16.2.1 {" in text and "peer-as 65001;" in text and "local-as 64512;" in text
    assert "route 10.244.1.0/24 next-hop self;" in text
    assert "graceful-restart 5;" in text and 'md5-password "pw";' in text


def test_two_subnets_routers_peer_with_their_node_and_each_other() -> None:
    t = topo("two-subnets")
    plans = {p.router: p for p in plan_router_bgp(t, node_configs(t))}
    assert set(plans) == {"r1", "r2"}
    r1 = {n.name: n for n in plans["r1"].neighbors}
    assert set(r1) == {"node_node1", "rtr_r2"}
    assert (str(r1["node_node1"].address), r1["node_node1"].asn, r1["node_node1"].passive) == (
        "172.16.2.2",
        64512,
        True,
    )
    assert (str(r1["rtr_r2"].address), r1["rtr_r2"].asn, r1["rtr_r2"].passive) == ("172.16.0.2", 65002, False)
    text = render_bird_config(plans["r1"])
    assert "if net ~ [ 10.244.0.0/16{24,24} ] then accept;" in text
    assert "export where source = RTS_BGP;" in text and "merge paths on;" in text
    assert "local 172.16.2.1 as 65001;" in text and "neighbor 172.16.2.2 as 64512;" in text


def test_leaf_spine_leaves_peer_with_both_spines_and_their_rack() -> None:
    t = topo("leaf-spine")
    plans = {p.router: p for p in plan_router_bgp(t, node_configs(t))}
    leaf1 = sorted(n.name for n in plans["leaf1"].neighbors)
    assert leaf1 == ["node_node1", "node_node2", "rtr_spine1", "rtr_spine2"]
    assert sorted(n.name for n in plans["spine1"].neighbors) == ["rtr_leaf1", "rtr_leaf2", "rtr_leaf3"]


def test_no_bird_when_bgp_is_disabled() -> None:
    t = load_topology("two-subnets")
    assert plan_router_bgp(t, node_configs(t)) == ()


def test_ibgp_link_uses_next_hop_self() -> None:
    t = topo("two-subnets")
    r2 = dataclasses.replace(t.host("r2"), asn=65001)
    t = dataclasses.replace(t, hosts=tuple(r2 if h.name == "r2" else h for h in t.hosts))
    r1 = next(p for p in plan_router_bgp(t, node_configs(t)) if p.router == "r1")
    text = render_bird_config(r1)
    assert "neighbor 172.16.0.2 as 65001;" in text and "next hop self;" in text


@pytest.mark.parametrize(
    ("peer", "words"),
    [
        ({"peerAddress": "172.16.2.9", "peerASN": 65001}, "not a router on node1's networks"),
        ({"peerAddress": "172.16.3.1", "peerASN": 65002}, "not a router on node1's networks"),
        ({"peerAddress": "172.16.2.1", "peerASN": 65009}, "use peerASN: 65001"),
    ],
)
def test_unknown_or_wrong_peer_fails_before_the_lab_is_built(peer: dict[str, Any], words: str) -> None:
    t = topo("two-subnets")
    node1 = dataclasses.replace(t.host("node1"), config={"bgp": {"peers": [peer]}})
    t = dataclasses.replace(t, hosts=tuple(node1 if h.name == "node1" else h for h in t.hosts))
    with pytest.raises(RouterBgpError, match=words):
        plan_router_bgp(t, node_configs(t))


def test_lab_fills_peers_with_the_gateway_router_and_keeps_peer_options() -> None:
    t = topo("two-subnets", ["bgp.peers=[{gracefulRestart: {restartTimeSeconds: 7}}]"])
    cfg = node_configs(t)["node2"]
    (peer,) = cfg.bgp_peers
    assert (str(peer.peer_address), peer.peer_asn, peer.restart_time) == ("172.16.3.1", 65002, 7)


def test_relay_folds_state_and_updates() -> None:
    peers: dict[str, Any] = {}
    nb = {"address": {"local": "172.16.2.2", "peer": "172.16.2.1"}}
    assert apply_event(peers, {"type": "state", "neighbor": {**nb, "state": "up"}}, 100.0)
    announce = {"update": {"announce": {"ipv4 unicast": {"172.16.2.1": [{"nlri": "10.244.2.0/24"}]}}}}
    apply_event(peers, {"type": "update", "neighbor": {**nb, "message": announce}}, 101.0)
    assert peers["172.16.2.1"] == {"state": "up", "since": 100.0, "received": ["10.244.2.0/24"]}
    withdraw = {"update": {"withdraw": {"ipv4 unicast": [{"nlri": "10.244.2.0/24"}]}}}
    apply_event(peers, {"type": "update", "neighbor": {**nb, "message": withdraw}}, 102.0)
    assert peers["172.16.2.1"]["received"] == []
    apply_event(peers, {"type": "update", "neighbor": {**nb, "message": announce}}, 103.0)
    apply_event(peers, {"type": "state", "neighbor": {**nb, "state": "down"}}, 104.0)
    assert peers["172.16.2.1"] == {"state": "down", "since": 104.0, "received": []}


PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-11-21 23:32:16
kernel1    Kernel     master4    up     2026-11-21 23:32:16
node_node1 BGP        ---        up     2026-11-21 23:32:18  Established
  Description:    node node1
  BGP state:          Established
    Neighbor address: 172.16.2.2
    Neighbor AS:      64512
  Channel ipv4
    Routes:         1 imported, 1 exported, 1 preferred
rtr_r2     BGP        ---        start  2026-11-21 23:32:17  Active        Socket: Connection refused
  Description:    router r2
  BGP state:          Active
    Neighbor address: 172.16.0.2
    Neighbor AS:      65002
"""

ROUTES = """\
BIRD 2.0.12 ready.
Table master4:
10.244.3.0/24        unicast [rtr_spine1 2026-11-21 23:32:18] * (100) [AS64512i]
\tvia 172.31.1.2 on to-spine1
                     unicast [rtr_spine2 2026-11-21 23:32:18] (100) [AS64512i]
\tvia 172.31.2.2 on to-spine2
10.244.1.0/24        unicast [node_node1 2026-11-21 23:32:18 from 172.20.1.10] * (100) [AS64512i]
\tvia 172.20.1.10 on rack1
"""


def test_birdc_protocols_parse() -> None:
    sessions = parse_protocols(PROTOCOLS, now=lambda: 2e9)
    assert [s["name"] for s in sessions] == ["node_node1", "rtr_r2"]
    up, down = sessions
    assert (up["state"], up["peerAddress"], up["peerASN"], up["received"], up["sent"]) == (
        "established", "172.16.2.2", 64512, 1, 1,
    )  # fmt: skip
    assert up["uptime"] > 0 and up["description"] == "node node1"
    assert (down["state"], down["uptime"], down["received"]) == ("active", 0.0, 0)


def test_birdc_routes_parse_multiple_paths() -> None:
    routes = parse_routes(ROUTES)
    assert [(r["prefix"], r["protocol"], r["primary"], r["via"]) for r in routes] == [
        ("10.244.3.0/24", "rtr_spine1", True, ["172.31.1.2"]),
        ("10.244.3.0/24", "rtr_spine2", False, ["172.31.2.2"]),
        ("10.244.1.0/24", "node_node1", True, ["172.20.1.10"]),
    ]


def test_node_rows_from_status_document() -> None:
    bgp = {
        "advertised": ["10.244.1.0/24"],
        "peers": [{"peerAddress": "172.16.2.1", "peerASN": 65001, "state": "established", "uptime": 3.0,
                   "sent": 1, "received": 1, "receivedPrefixes": ["10.244.2.0/24"]}],
    }  # fmt: skip
    assert node_peer_rows("node1", bgp)[0]["state"] == "established"
    rows = node_route_rows("node1", bgp, None)
    assert [(r["direction"], r["prefix"]) for r in rows] == [
        ("advertised", "10.244.1.0/24"), ("received", "10.244.2.0/24"),
    ]  # fmt: skip
    assert [r["direction"] for r in node_route_rows("node1", bgp, "received")] == ["received"]
    assert "10.244.2.0/24" in render_table(rows, ("host", "direction", "prefix"))
