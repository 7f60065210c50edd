"""The planner per routing mode: tunnel, native direct, native behind a gateway, native without
auto-direct-node-routes; plus peers with missing data and conflicting CIDRs."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from podnet.config import AgentConfig, load_config
from podnet.datapath.plan import (
    DesiredState,
    FdbEntry,
    LocalNode,
    Neighbour,
    PeerPath,
    Reach,
    Severity,
    paths_needed,
    plan,
)
from podnet.model import NodeInfo

ip = ipaddress.ip_address
net = ipaddress.ip_network


def node(n: int, *, mac: bool = True, cidr: bool = True, segment: int = 2) -> NodeInfo:
    return NodeInfo(
        name=f"node{n}",
        ipv4=ipaddress.IPv4Address(f"172.16.{segment}.{n + 1}"),
        vtep_mac=f"02:00:00:00:00:0{n}" if mac else None,
        pod_cidrs=(net(f"10.244.{n}.0/24"),) if cidr else (),
        router_ips=(ip(f"10.244.{n}.1"),) if cidr else (),
    )


LOCAL = LocalNode(node(1), "eth0", 2, 1500)


def cfg(**values: Any) -> AgentConfig:
    native_cidr = {"ipv4NativeRoutingCIDR": "10.244.0.0/16"} if values.get("routingMode") == "native" else {}
    return load_config({"nodeName": "node1", **native_cidr, **values})


def direct(peer: NodeInfo) -> PeerPath:
    assert peer.ipv4 is not None
    return PeerPath(dst=peer.ipv4, dev="eth0")


def lines(state: DesiredState) -> list[str]:
    return [r.describe() for r in state.routes]


def test_tunnel_vxlan_route_neigh_fdb_per_peer() -> None:
    peers = [node(1), node(3), node(2)]
    state = plan(LOCAL, peers, cfg(), {})
    assert lines(state) == [
        "10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201",
        "10.244.3.0/24 via 10.244.3.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201",
    ]
    assert state.neighbours == (
        Neighbour(ip("10.244.2.1"), "02:00:00:00:00:02", "podnet_vxlan"),
        Neighbour(ip("10.244.3.1"), "02:00:00:00:00:03", "podnet_vxlan"),
    )
    assert state.fdb == (
        FdbEntry("02:00:00:00:00:02", ip("172.16.2.3"), "podnet_vxlan"),
        FdbEntry("02:00:00:00:00:03", ip("172.16.2.4"), "podnet_vxlan"),
    )
    assert state.reach == (("node2", Reach.TUNNEL), ("node3", Reach.TUNNEL))
    assert state.issues == () and state.route_mtu == 1450 and state.tunnel_device == "podnet_vxlan"


def test_plan_is_deterministic_regardless_of_peer_order() -> None:
    peers = [node(2), node(3), node(4)]
    assert plan(LOCAL, peers, cfg(), {}) == plan(LOCAL, list(reversed(peers)), cfg(), {})


def test_explicit_mtu_sets_route_mtu() -> None:
    assert plan(LOCAL, [node(2)], cfg(MTU=9000), {}).routes[0].mtu == 8950


@pytest.mark.parametrize(
    ("peer", "fragment"),
    [
        (node(2, mac=False), "it publishes no VTEP MAC"),
        (node(2, cidr=False), "has no pod CIDR yet"),
    ],
)
def test_tunnel_peer_missing_data_is_a_warning_not_a_crash(peer: NodeInfo, fragment: str) -> None:
    state = plan(LOCAL, [peer, node(3)], cfg(), {})
    assert lines(state) == [
        "10.244.3.0/24 via 10.244.3.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201"
    ]
    (issue,) = state.issues
    assert issue.peer == "node2" and issue.severity is Severity.WARNING and fragment in issue.message
    assert state.reach_of("node2") is Reach.UNREACHABLE


def test_native_direct_routes() -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True)
    peers = [node(2), node(3)]
    assert [str(a) for a in paths_needed(LOCAL, [LOCAL.node, *peers], config)] == ["172.16.2.3", "172.16.2.4"]
    state = plan(LOCAL, peers, config, {str(p.ipv4): direct(p) for p in peers})
    assert lines(state) == [
        "10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201",
        "10.244.3.0/24 via 172.16.2.4 dev eth0 proto 201",
    ]
    assert state.neighbours == () and state.fdb == () and state.tunnel_device is None
    assert state.reach_of("node2") is Reach.DIRECT and state.route_mtu == 1500


@pytest.mark.parametrize(("skip", "severity"), [(True, Severity.WARNING), (False, Severity.ERROR)])
def test_native_peer_behind_gateway(skip: bool, severity: Severity) -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True, directRoutingSkipUnreachable=skip)
    far = node(3, segment=3)
    paths = {
        "172.16.2.3": direct(node(2)),
        "172.16.3.4": PeerPath(dst=ip("172.16.3.4"), dev="eth0", gateway=ip("172.16.2.1")),
    }
    state = plan(LOCAL, [node(2), far], config, paths)
    assert lines(state) == ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"]
    (issue,) = state.issues
    assert issue.peer == "node3" and issue.severity is severity
    assert (
        "route to destination 172.16.3.4 contains gateway 172.16.2.1, must be directly reachable"
        in issue.message
    )
    assert state.reach_of("node3") is Reach.UNREACHABLE


def test_native_missing_path_is_an_error_for_that_peer_only() -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True)
    state = plan(LOCAL, [node(2), node(3)], config, {"172.16.2.3": direct(node(2))})
    assert len(state.routes) == 1 and [i.peer for i in state.errors()] == ["node3"]


def test_native_without_direct_routes_installs_nothing_per_peer() -> None:
    config = cfg(routingMode="native")
    assert paths_needed(LOCAL, [node(2)], config) == ()
    state = plan(LOCAL, [node(2), node(3)], config, {})
    assert state.routes == () and state.issues == ()
    assert state.reach == (("node2", Reach.UNDERLAY), ("node3", Reach.UNDERLAY))


def test_native_explicit_mtu_goes_on_direct_routes() -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True, MTU=1400)
    state = plan(LOCAL, [node(2)], config, {"172.16.2.3": direct(node(2))})
    assert lines(state) == ["10.244.2.0/24 via 172.16.2.3 dev eth0 mtu 1400 proto 201"]


def test_conflicting_cidrs_are_refused_per_peer() -> None:
    thief = NodeInfo(
        name="node0",
        ipv4=ipaddress.IPv4Address("172.16.2.9"),
        vtep_mac="02:00:00:00:00:09",
        pod_cidrs=(net("10.244.1.0/25"),),
        router_ips=(ip("10.244.1.1"),),
    )
    copy = NodeInfo(
        name="node9",
        ipv4=ipaddress.IPv4Address("172.16.2.10"),
        vtep_mac="02:00:00:00:00:0a",
        pod_cidrs=(net("10.244.2.0/24"),),
        router_ips=(ip("10.244.2.1"),),
    )
    state = plan(LOCAL, [thief, node(2), copy], cfg(), {})
    assert [str(r.dst) for r in state.routes] == ["10.244.2.0/24"]
    assert state.routes[0].gateway == ip("10.244.2.1")
    assert {i.peer for i in state.errors()} == {"node0", "node9"}
    assert "overlaps the local pod CIDR 10.244.1.0/24" in state.errors()[0].message


def test_local_node_is_never_planned() -> None:
    assert plan(LOCAL, [LOCAL.node], cfg(), {}) == plan(LOCAL, [], cfg(), {})


def behind_gateway(peer: NodeInfo) -> PeerPath:
    assert peer.ipv4 is not None
    return PeerPath(dst=peer.ipv4, dev="eth0", gateway=ipaddress.IPv4Address("172.16.2.1"))


@pytest.mark.parametrize(
    ("extra", "reach3", "route3", "why3"),
    [
        # no BGP: the routed peer falls back to VXLAN
        (
            {},
            Reach.TUNNEL,
            "10.244.3.0/24 via 10.244.3.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201",
            "behind gateway 172.16.2.1",
        ),
        # BGP and the peer's CIDR inside the native routing CIDR: the fabric routes it, nothing per peer
        (
            {
                "bgp": {
                    "enabled": True,
                    "localASN": 64512,
                    "peers": [{"peerAddress": "172.16.2.1", "peerASN": 65001}],
                }
            },
            Reach.UNDERLAY,
            None,
            "routed by the BGP fabric",
        ),
        # BGP, but the peer's CIDR is outside the native routing CIDR: tunnel
        (
            {
                "ipv4NativeRoutingCIDR": "10.244.2.0/24",
                "bgp": {
                    "enabled": True,
                    "localASN": 64512,
                    "peers": [{"peerAddress": "172.16.2.1", "peerASN": 65001}],
                },
            },
            Reach.TUNNEL,
            "10.244.3.0/24 via 10.244.3.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201",
            "not routable by the underlay",
        ),
    ],
)
def test_hybrid_chooses_per_peer(extra: dict[str, Any], reach3: Reach, route3: str | None, why3: str) -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True, tunnelFallback=True, **extra)
    peer2, peer3 = node(2), node(3, segment=3)
    state = plan(
        LOCAL, [peer2, peer3], config, {"172.16.2.3": direct(peer2), "172.16.3.4": behind_gateway(peer3)}
    )
    assert state.reach == (("node2", Reach.DIRECT), ("node3", reach3))
    expected = ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"] + ([route3] if route3 else [])
    assert lines(state) == expected
    reasons = dict(state.reasons)
    assert "same L2 segment" in reasons["node2"] and why3 in reasons["node3"]
    assert state.route_mtu == 1450 and state.tunnel_device == "podnet_vxlan"  # pods may cross the tunnel
    assert state.issues == ()


def test_hybrid_looks_up_paths_for_every_peer() -> None:
    config = cfg(routingMode="native", tunnelFallback=True)
    assert paths_needed(LOCAL, [node(2), node(3)], config) == (ip("172.16.2.3"), ip("172.16.2.4"))


def test_switch_to_tunnel_keeps_direct_route_until_the_peer_publishes_its_vtep() -> None:
    native = cfg(routingMode="native", autoDirectNodeRoutes=True)
    before = plan(LOCAL, [node(2)], native, {"172.16.2.3": direct(node(2))})
    assert lines(before) == ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"]
    no_vtep_yet = node(2, mac=False)
    during = plan(LOCAL, [no_vtep_yet], cfg(), {}, previous=before)
    assert lines(during) == ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"]
    assert during.reach_of("node2") is Reach.DIRECT
    assert any("keeping the previous" in i.message for i in during.issues)
    after = plan(LOCAL, [node(2)], cfg(), {}, previous=during)
    assert lines(after)[0].startswith("10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan")
    assert plan(LOCAL, [no_vtep_yet], cfg(), {}).routes == ()  # nothing to keep without a previous plan


def dual(n: int) -> NodeInfo:
    """node ``n`` with an IPv6 pod CIDR beside its IPv4 one."""
    base = node(n)
    return dataclasses.replace(
        base,
        pod_cidrs=(*base.pod_cidrs, net(f"fd00:10:244:{n}::/64")),
        router_ips=(*base.router_ips, ip(f"fd00:10:244:{n}::1")),
    )


def test_tunnel_ipv6_cidr_gets_a_host_route_for_its_gateway_applied_first() -> None:
    from podnet.datapath.reconcile import CurrentState, diff

    state = plan(LocalNode(dual(1), "eth0", 2, 1500), [dual(1), dual(2)], cfg(ipv6={"enabled": True}), {})
    assert lines(state) == [
        "10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201",
        "fd00:10:244:2::/64 via fd00:10:244:2::1 dev podnet_vxlan onlink src fd00:10:244:1::1 mtu 1450 "
        "proto 201",
        "fd00:10:244:2::1/128 dev podnet_vxlan scope link mtu 1450 proto 201",
    ]
    order = [c.obj.describe() for c in diff(CurrentState((), (), ()), state) if c.obj in state.routes]
    assert order[0].startswith("fd00:10:244:2::1/128")  # IPv6 checks the gateway against the table
