"""A dual-stack underlay (issue 16), pure parts: IPv6 on router links and gateways, the lab's
IPv6 underlay routes, BGP sessions per family (ExaBGP and BIRD), the path-MTU probe families."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from podnet.bgp.exabgp import SpeakerError, SpeakerSpec, render_config
from podnet.config.bgp import BgpPeer, BgpSettingError, parse_peers
from podnet.datapath.modes.base import Reach
from podnet.datapath.pmtu import probe_families
from podnet.lab.bird import node_configs, plan_router_bgp, render_bird_config
from podnet.lab.topology import EXAMPLES_DIR, TopologyError, load_topology, parse_topology
from podnet.lab.underlay import plan_underlay_routes


def _raw() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES_DIR / "dual-stack-bgp.yaml").read_text())  # type: ignore[no-any-return]


def test_nodes_take_their_routers_ipv6_address_as_ipv6_gateway() -> None:
    t = load_topology("dual-stack-bgp")
    assert str(t.host("node1").gateway6) == "fd00:2::1" and str(t.host("world").gateway6) == "2001:db8:113::1"
    assert t.host("cp").gateway6 is None  # the control plane has no IPv6 address


def test_ipv6_underlay_routes_cross_the_ipv6_router_link() -> None:
    routes = {
        (r.router, str(r.dst)): [str(v) for v in r.via]
        for r in plan_underlay_routes(load_topology("dual-stack-bgp"))
    }
    assert routes[("r1", "fd00:3::/64")] == ["fd00:0:12::2"]
    assert routes[("r2", "2001:db8:113::/64")] == ["fd00:0:12::1"]
    assert routes[("r1", "172.16.3.0/24")] == ["172.16.0.2"]


def test_a_link_without_ipv6_carries_no_ipv6_route() -> None:
    raw = _raw()
    for router in raw["routers"]:
        for iface in router["interfaces"]:
            if "peer" in iface:
                del iface["ipv6"]
    routes = plan_underlay_routes(parse_topology(raw))
    assert not any(r.dst.version == 6 for r in routes)
    assert any(str(r.dst) == "172.16.3.0/24" for r in routes)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["routers"][0]["interfaces"][1].pop("ipv6"), r"only one end of link r1-r2 has an ipv6"),
        (lambda r: r["routers"][0]["interfaces"][1].update(ipv6="fd00:0:13::1/126"), r"different subnets"),
        (lambda r: r["routers"][0]["interfaces"][1].update(ipv6="fd00:0:12::1"), r"needs a /64 to /127"),
        (
            lambda r: r["nodes"][0].update(ipv6Gateway="fd00:2::9"),
            r"nodes\.node1\.ipv6Gateway: fd00:2::9 is not",
        ),
        (lambda r: r["nodes"][1].update(ipv6="fd00:3::1"), r"fd00:3::1 is already used by r2"),
        (
            lambda r: r["routers"][1].update(routes=[{"to": "fd00:9::/64", "via": "172.16.0.1"}]),
            r"different IP",
        ),
    ],
)
def test_bad_ipv6_underlay_is_refused_naming_the_key(edit: Any, expected: str) -> None:
    raw = copy.deepcopy(_raw())
    edit(raw)
    with pytest.raises(TopologyError, match=expected):
        parse_topology(raw)


def test_routers_open_one_session_per_family_with_nodes_and_each_other() -> None:
    t = load_topology("dual-stack-bgp")
    configs = node_configs(t)
    assert [str(p.peer_address) for p in configs["node1"].bgp_peers] == ["172.16.2.1", "fd00:2::1"]
    (r1,) = [p for p in plan_router_bgp(t, configs) if p.router == "r1"]
    sessions = {n.name: (str(n.local_address), str(n.address)) for n in r1.neighbors}
    assert sessions == {
        "node_node1": ("172.16.2.1", "172.16.2.2"), "node_node1_v6": ("fd00:2::1", "fd00:2::2"),
        "rtr_r2": ("172.16.0.1", "172.16.0.2"), "rtr_r2_v6": ("fd00:0:12::1", "fd00:0:12::2"),
    }  # fmt: skip
    text = render_bird_config(r1)
    assert "if net ~ [ fd00:10:244::/56{64,64} ] then accept;" in text
    assert "ipv6 { import filter podnet_pod_cidrs_v6; export filter podnet_pod_cidrs_v6; };" in text
    assert text.count("protocol kernel {") == 2


def test_an_ipv4_only_cluster_opens_no_ipv6_session() -> None:
    raw = _raw()
    raw["cluster"]["ipv6"]["enabled"] = False
    t = parse_topology(raw)
    configs = node_configs(t)
    assert [str(p.peer_address) for p in configs["node1"].bgp_peers] == ["172.16.2.1"]
    text = render_bird_config(next(p for p in plan_router_bgp(t, configs) if p.router == "r1"))
    assert "ipv6 {" not in text and "rtr_r2_v6" not in text  # the link has IPv6, the cluster does not


def test_exabgp_sends_each_peer_its_own_family() -> None:
    peers = parse_peers("bgp.peers", [{"peerAddress": "172.16.2.1", "peerASN": 65001},
                                      {"peerAddress": "fd00:2::1/128", "peerASN": 65001}])  # fmt: skip
    prefixes = (ipaddress.ip_network("10.244.0.0/24"), ipaddress.ip_network("fd00:10:244::/64"))
    node = ipaddress.IPv4Address("172.16.2.2")
    spec = SpeakerSpec(node, node, 64512, peers, prefixes, Path("/tmp/x"), ipaddress.IPv6Address("fd00:2::2"))
    text = render_config(spec, ["relay"])
    v4, v6 = text.split("neighbor fd00:2::1 {")
    assert "family { ipv4 unicast; }" in v4 and "route 10.244.0.0/24 next-hop self;" in v4
    assert "fd00:10:244::/64" not in v4
    assert "local-address fd00:2::2;" in v6 and "family { ipv6 unicast; }" in v6
    assert "route fd00:10:244::/64 next-hop self;" in v6 and "10.244.0.0" not in v6
    with pytest.raises(SpeakerError, match="no IPv6 address"):
        render_config(SpeakerSpec(**{**spec.__dict__, "local_address6": None}), ["relay"])


def test_peer_addresses_of_either_family_and_their_errors() -> None:
    assert parse_peers("p", [{"peerAddress": "fd00::1", "peerASN": 1}])[0] == BgpPeer(
        ipaddress.IPv6Address("fd00::1"), 1
    )
    with pytest.raises(BgpSettingError, match="is not an IP address"):
        parse_peers("p", [{"peerAddress": "fd00::zz", "peerASN": 1}])


def test_path_mtu_probes_follow_the_family_the_packets_use() -> None:
    assert probe_families(Reach.TUNNEL, (4, 6), 6) == (6,)  # VXLAN over IPv6 carries both
    assert probe_families(Reach.TUNNEL, (4, 6), 4) == (4,)
    assert probe_families(Reach.DIRECT, (4, 6), 4) == (4, 6)  # native: each family by itself
    assert probe_families(Reach.UNDERLAY, (6,), 4) == (6,)


def test_an_ipv6_pool_overlapping_an_ipv6_segment_is_refused() -> None:
    raw = yaml.safe_load((EXAMPLES_DIR / "dual-stack.yaml").read_text())
    raw["cluster"]["ipam"]["operator"]["clusterPoolIPv6PodCIDRList"] = ["fd00:1::/56"]
    with pytest.raises(
        TopologyError, match=r"clusterPoolIPv6PodCIDRList: pod CIDR fd00:1::/56 overlaps network lan"
    ):
        parse_topology(raw)
