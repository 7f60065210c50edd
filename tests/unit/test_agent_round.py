"""The agent's round as a pure function: datapath plan, masquerade table, route MTU, tunnel device."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from podnet.agent.round import TUNNEL_LABEL, node_labels, plan_round
from podnet.config import AgentConfig, load_config
from podnet.datapath.modes.base import LocalNode, PeerPath, Reach
from podnet.model import NodeInfo

net = ipaddress.ip_network


def node(n: int, labels: tuple[tuple[str, str], ...] = ()) -> NodeInfo:
    return NodeInfo(
        name=f"node{n}",
        ipv4=ipaddress.IPv4Address(f"172.16.2.{n + 1}"),
        vtep_mac=f"02:00:00:00:00:0{n}",
        pod_cidrs=(net(f"10.244.{n}.0/24"),),
        router_ips=(ipaddress.ip_address(f"10.244.{n}.1"),),
        labels=labels,
    )


LOCAL = LocalNode(node(1), "eth0", 2, 1500)


def cfg(**values: Any) -> AgentConfig:
    return load_config({"nodeName": "node1", "ipv4NativeRoutingCIDR": "10.244.0.0/16", **values})


def test_tunnel_round() -> None:
    config = cfg()
    r = plan_round(config, LOCAL, [node(1), node(2)], {})
    assert r.route_mtu == 1450 and r.desired.route_mtu == 1450
    assert r.keep_tunnel_device and r.desired.tunnel_device == "podnet_vxlan"
    assert r.desired.reach == (("node2", Reach.TUNNEL),)
    assert r.masquerade is not None
    assert r.masquerade.egress_dev == "eth0" and r.masquerade.pod_cidrs == (net("10.244.1.0/24"),)
    assert set(r.masquerade.node_ips) == {
        ipaddress.IPv4Address("172.16.2.2"),
        ipaddress.IPv4Address("172.16.2.3"),
    }
    assert node_labels(config) == ((TUNNEL_LABEL, "vxlan"),)


@pytest.mark.parametrize(("peer_tunnels", "keep"), [(False, False), (True, True)])
def test_native_round_keeps_the_tunnel_device_only_while_a_peer_tunnels(
    peer_tunnels: bool, keep: bool
) -> None:
    config = cfg(routingMode="native", autoDirectNodeRoutes=True)
    peer = node(2, ((TUNNEL_LABEL, "vxlan"),) if peer_tunnels else ())
    paths = {"172.16.2.3": PeerPath(dst=ipaddress.ip_address("172.16.2.3"), dev="eth0")}
    r = plan_round(config, LOCAL, [peer], paths)
    assert r.route_mtu == 1500 and r.desired.tunnel_device is None
    assert r.keep_tunnel_device is keep
    assert [x.describe() for x in r.desired.routes] == ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"]
    assert node_labels(config) == ()


def test_masquerading_off_plans_no_table() -> None:
    r = plan_round(cfg(enableIPv4Masquerade=False), LOCAL, [node(2)], {})
    assert r.masquerade is None


def test_round_is_pure_and_repeatable() -> None:
    config, peers = cfg(), [node(2), node(3)]
    first = plan_round(config, LOCAL, peers, {})
    assert plan_round(config, LOCAL, list(reversed(peers)), {}) == first
    assert plan_round(config, dataclasses.replace(LOCAL, underlay_mtu=9000), peers, {}).route_mtu == 8950
