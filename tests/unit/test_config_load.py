"""AgentConfig: Cilium's spellings, precedence, and errors that name the key and the fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from podnet.config import AgentConfig, ConfigError, load_config, load_config_file
from podnet.datapath.modes import mode_for
from podnet.datapath.support import check_kernel_support

NODE = {"nodeName": "n1", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}


def test_defaults_are_cilium_defaults() -> None:
    cfg = load_config(NODE)
    assert cfg.routing_mode == "tunnel" and cfg.tunnel_protocol == "vxlan" and cfg.tunnel_port == 8472
    assert cfg.mtu == 0 and cfg.auto_direct_node_routes is False
    assert cfg.cluster_pool_ipv4_cidrs == (ipaddress.IPv4Network("10.0.0.0/8"),)
    assert cfg.cluster_pool_ipv4_mask_size == 24 and cfg.enable_ipv4_masquerade is True


@pytest.mark.parametrize(
    ("mapping", "field", "expected"),
    [
        ({"routingMode": "native"}, "routing_mode", "native"),
        ({"routing-mode": "native"}, "routing_mode", "native"),
        ({"tunnel": "disabled"}, "routing_mode", "native"),
        ({"tunnel": "vxlan"}, "routing_mode", "tunnel"),
        ({"tunnel": "geneve"}, "tunnel_protocol", "geneve"),
        ({"enable-ipv4-native-routing": "true"}, "routing_mode", "native"),
        ({"tunnelProtocol": "geneve"}, "tunnel_port", 6081),
        ({"tunnel-protocol": "vxlan", "tunnel-port": "0"}, "tunnel_port", 8472),
        ({"tunnelPort": 4789}, "tunnel_port", 4789),
        ({"MTU": 9000}, "mtu", 9000),
        ({"mtu": "1400"}, "mtu", 1400),
        ({"routingMode": "native", "autoDirectNodeRoutes": True}, "auto_direct_node_routes", True),
        (
            {
                "routing-mode": "native",
                "auto-direct-node-routes": "true",
                "direct-routing-skip-unreachable": "yes",
            },
            "direct_routing_skip_unreachable",
            True,
        ),
        (
            {"ipv4NativeRoutingCIDR": "10.244.0.0/16"},
            "ipv4_native_routing_cidr",
            ipaddress.IPv4Network("10.244.0.0/16"),
        ),
        (
            {"ipv4-native-routing-cidr": "10.0.0.0/8"},
            "ipv4_native_routing_cidr",
            ipaddress.IPv4Network("10.0.0.0/8"),
        ),
        ({"ipam": {"mode": "cluster-pool"}}, "ipam_mode", "cluster-pool"),
        (
            {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": ["10.244.0.0/16", "10.245.0.0/16"]}}},
            "cluster_pool_ipv4_cidrs",
            (ipaddress.IPv4Network("10.244.0.0/16"), ipaddress.IPv4Network("10.245.0.0/16")),
        ),
        ({"ipam": {"operator": {"clusterPoolIPv4MaskSize": 26}}}, "cluster_pool_ipv4_mask_size", 26),
        (
            {"cluster-pool-ipv4-cidr": "10.244.0.0/16"},
            "cluster_pool_ipv4_cidrs",
            (ipaddress.IPv4Network("10.244.0.0/16"),),
        ),
        ({"etcd": {"endpoints": ["http://127.0.0.1:2379"]}}, "etcd_endpoints", ("http://127.0.0.1:2379",)),
        (
            {"kvstore": "etcd", "kvstore-opt": "etcd.endpoints=http://a:2379,http://b:2379"},
            "etcd_endpoints",
            ("http://a:2379", "http://b:2379"),
        ),
        ({"kvstore-opt": {"etcd.endpoints": "http://a:2379"}}, "etcd_endpoints", ("http://a:2379",)),
        ({"enableIPv4Masquerade": False}, "enable_ipv4_masquerade", False),
        ({"devices": "eth0,eth1"}, "devices", ("eth0", "eth1")),
        ({"agentSocket": "/run/p.sock"}, "agent_socket", Path("/run/p.sock")),
        ({"state-dir": "/tmp/s"}, "state_dir", Path("/tmp/s")),
    ],
)
def test_accepted_spellings(mapping: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(load_config({**NODE, **mapping}), field) == expected


def test_precedence_cli_over_env_over_file() -> None:
    cfg = load_config(
        {"routingMode": "tunnel", "MTU": 1400, "nodeName": "file"},
        env={"PODNET_MTU": "1300", "PODNET_NODE_NAME": "env", "PODNET_UNRELATED": "x", "HOME": "/root"},
        overrides={"node-name": "cli", "routing-mode": None},
    )
    assert (cfg.node_name, cfg.mtu, cfg.routing_mode) == ("cli", 1300, "tunnel")


def test_node_name_falls_back_to_k8s_node_name() -> None:
    assert load_config({}, env={"K8S_NODE_NAME": "k8s"}).node_name == "k8s"


def test_config_is_frozen() -> None:
    cfg = load_config(NODE)
    with pytest.raises(AttributeError):
        cfg.mtu = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mapping", "key", "fragment"),
    [
        ({"routingMode": "bgp"}, "routingMode", "is not one of native, tunnel"),
        ({"routing-mode": "hybird"}, "routing-mode", "native, tunnel"),
        ({"tunnelProtocol": "gre"}, "tunnelProtocol", "geneve, vxlan"),
        ({"tunnel": "ipip"}, "tunnel", "disabled, geneve, vxlan"),
        ({"tunnelPort": 70000}, "tunnelPort", "0 or 1..65535"),
        ({"MTU": 100}, "MTU", "0 or 576..65535"),
        ({"mtu": "big"}, "mtu", "'big' is not an integer"),
        ({"autoDirectNodeRoutes": "maybe"}, "autoDirectNodeRoutes", "use true or false"),
        ({"autoDirectNodeRoutes": True}, "autoDirectNodeRoutes", "use routingMode=native"),
        (
            {"routingMode": "native", "directRoutingSkipUnreachable": True},
            "directRoutingSkipUnreachable",
            "requires autoDirectNodeRoutes=true",
        ),
        ({"ipv4NativeRoutingCIDR": "10.0.0.1/8"}, "ipv4NativeRoutingCIDR", "host bits"),
        ({"ipv4-native-routing-cidr": "banana"}, "ipv4-native-routing-cidr", "is not an IPv4 CIDR"),
        ({"cluster-pool-ipv4-cidr": "10.244.0.0/33"}, "cluster-pool-ipv4-cidr", "is not an IPv4 CIDR"),
        (
            {"cluster-pool-ipv4-cidr": "10.244.0.0/16", "cluster-pool-ipv4-mask-size": 8},
            "cluster-pool-ipv4-mask-size",
            "between 16 and 30",
        ),
        ({"cluster-pool-ipv4-mask-size": 31}, "cluster-pool-ipv4-mask-size", "use 30 or less"),
        (
            {"ipam": {"operator": {"clusterPoolIPv4MaskSize": 40}}},
            "ipam.operator.clusterPoolIPv4MaskSize",
            "1..32",
        ),
        ({"ipam": {"mode": "eni"}}, "routingMode", "set routingMode=native"),
        (
            {"ipam": {"mode": "eni"}, "routingMode": "native", "autoDirectNodeRoutes": True},
            "autoDirectNodeRoutes",
            "the VPC delivers each pod address",
        ),
        ({"eni": {"awsEnablePrefixDelegation": True}}, "eni.awsEnablePrefixDelegation", "not supported"),
        ({"eni": {"preAlocate": 4}}, "eni.preAlocate", "did you mean 'preAllocate'"),
        ({"eni": {"subnetIDsFilter": ["subnet-x"]}}, "eni.subnetIDsFilter", "not an ID like subnet-"),
        ({"egressMasqueradeInterfaces": ["eth/0"]}, "egressMasqueradeInterfaces", "not an interface name"),
        ({"ipam": {"mode": "kubernetes"}}, "ipam.mode", "needs datastore: kubernetes"),
        ({"ipam": {"mode": "foo"}}, "ipam.mode", "cluster-pool, crd, eni, kubernetes, multi-pool"),
        ({"ipam": {"mode": "crd"}}, "ipam.mode", "needs datastore: kubernetes"),
        (
            {
                "ipam": {
                    "operator": {"autoCreatePodIPPools": {"../x": {"ipv4": {"cidrs": [], "maskSize": 24}}}}
                }
            },
            "ipam.operator.autoCreatePodIPPools",
            "pool name '../x'",
        ),
        (
            {"ipam": {"multiPoolPreAllocation": "default"}},
            "ipam.multiPoolPreAllocation",
            "expected POOL=COUNT",
        ),
        ({"tunnel": "disabled", "routingMode": "tunnel"}, "tunnel", "contradicts routingMode"),
        ({"kvstore": "consul"}, "kvstore", "is not one of etcd"),
        ({"kvstore-opt": "etcd.config=/x"}, "kvstore-opt", "use etcd.endpoints="),
        ({"routingMod": "native"}, "routingMod", "did you mean 'routingMode'"),
        ({"tunel-protocol": "vxlan"}, "tunel-protocol", "did you mean 'tunnel-protocol'"),
        (
            {"ipam": {"operator": {"clusterPoolIPv4PodCIDRLst": []}}},
            "ipam.operator.clusterPoolIPv4PodCIDRLst",
            "did you mean",
        ),
        ({"nodeName": " "}, "nodeName", "must not be empty"),
    ],
)
def test_errors_name_key_and_fix(mapping: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**NODE, **mapping})
    assert caught.value.key == key
    assert key in str(caught.value) and fragment in str(caught.value)


def test_unknown_cli_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="did you mean 'auto-direct-node-routes'"):
        load_config(NODE, overrides={"auto-direct-node-route": True})


def test_native_without_direct_routes_or_cidr_is_accepted_without_masquerading() -> None:
    cfg = load_config({"nodeName": "n1", "routingMode": "native", "enableIPv4Masquerade": False})
    assert cfg.auto_direct_node_routes is False and cfg.ipv4_native_routing_cidr is None


def test_native_with_masquerading_needs_the_native_routing_cidr() -> None:
    with pytest.raises(ConfigError, match=r"ipv4NativeRoutingCIDR: must be set when routingMode=native"):
        load_config({"nodeName": "n1", "routingMode": "native"})


@pytest.mark.parametrize(
    ("values", "tunnel_enabled"),
    [
        ({"routingMode": "tunnel"}, True),
        ({"routingMode": "native"}, False),
        ({"routingMode": "native", "tunnelFallback": True}, True),
        ({"routing-mode": "native", "tunnel-fallback": "true", "ipv6NativeRoutingCIDR": "fd00::/48"}, True),
    ],
)
def test_tunnel_fallback_keeps_the_tunnel_device(values: dict[str, Any], tunnel_enabled: bool) -> None:
    config = load_config({**NODE, **values})
    assert (mode_for(config).tunnel(config) is not None) is tunnel_enabled


def test_tunnel_fallback_needs_native_routing() -> None:
    with pytest.raises(ConfigError, match="tunnelFallback: true only makes sense with routingMode=native"):
        load_config({**NODE, "tunnelFallback": True})


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "podnet.yaml"
    path.write_text(
        "nodeName: y\nrouting-mode: native\nipv4-native-routing-cidr: 10.0.0.0/8\n"
        "ipam:\n  operator:\n    clusterPoolIPv4MaskSize: 25\n"
    )
    cfg = load_config_file(path)
    assert (cfg.node_name, cfg.routing_mode, cfg.cluster_pool_ipv4_mask_size) == ("y", "native", 25)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_config_file(path)


def _cfg(**values: Any) -> AgentConfig:
    return load_config({**NODE, **values})


@pytest.mark.parametrize(
    ("cfg", "available", "fragment"),
    [
        (_cfg(tunnelProtocol="geneve"), {"vxlan"}, "use tunnelProtocol=vxlan"),
        (_cfg(tunnelProtocol="vxlan"), set(), "use routingMode=native"),
    ],
)
def test_kernel_support_refuses_missing_module(cfg: AgentConfig, available: set[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_kernel_support(cfg, has_link_kind=lambda kind: kind in available)
    assert caught.value.key == "tunnelProtocol" and fragment in str(caught.value)


def test_kernel_support_accepts_what_is_there() -> None:
    check_kernel_support(_cfg(tunnelProtocol="vxlan"), has_link_kind=lambda kind: kind == "vxlan")
    check_kernel_support(_cfg(routingMode="native"), has_link_kind=lambda kind: False)


def test_a_config_file_with_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("nodeName: n1\nroutingMode: native\nroutingMode: tunnel\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'routingMode' at line 3 \(first at line 2\)"):
        load_config_file(path)


@pytest.mark.parametrize(
    ("value", "seconds"), [("5m0s", 300.0), ("30s", 30.0), ("1h30m", 5400.0), ("0", 0.0), (90, 90.0)]
)
def test_endpoint_gc_interval_takes_cilium_durations(value: object, seconds: float) -> None:
    assert load_config({**NODE, "endpointGCInterval": value}).endpoint_gc_interval == seconds
    assert load_config({**NODE, "endpoint-gc-interval": value}).endpoint_gc_interval == seconds


@pytest.mark.parametrize("value", ["5 min", "-1s", "-3", "nan", "inf", "m", ""])
def test_a_bad_endpoint_gc_interval_is_refused_with_an_example(value: str) -> None:
    with pytest.raises(ConfigError, match=r"endpointGCInterval.*(5m0s|0 \(off\) or more)"):
        load_config({**NODE, "endpointGCInterval": value})
