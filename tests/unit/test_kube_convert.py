"""PodnetNode <-> node record: what an agent publishes reads back as the same record."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.kube.convert import agent_spec, record_of
from podnet.model import NodeInfo
from podnet.store.nodes import NodeRecord

NODE = NodeInfo(
    name="node1",
    ipv4=ipaddress.IPv4Address("192.168.1.11"),
    ipv6=ipaddress.IPv6Address("fd00::11"),
    vtep_mac="02:00:00:00:00:11",
    router_ips=(ipaddress.ip_address("10.244.1.1"),),
    labels=(("zone", "a"),),
)


def test_agent_spec_reads_back_with_the_operators_cidrs() -> None:
    record = NodeRecord(NODE, (ipaddress.ip_network("10.244.1.0/24"),))
    spec = agent_spec(record)
    assert "podCIDRs" not in spec["ipam"]  # the operator's field: the agent never writes it
    spec["ipam"]["podCIDRs"] = ["10.244.1.0/24"]
    back = record_of("node1", spec, {"health": "ok"})
    assert back.node.pod_cidrs == (ipaddress.ip_network("10.244.1.0/24"),)
    assert back.node == NODE.__class__(**{**NODE.__dict__, "pod_cidrs": back.node.pod_cidrs})
    assert back.requested_pod_cidrs == record.requested_pod_cidrs


def test_a_node_without_vtep_or_addresses_yet() -> None:
    bare = record_of("node2", {"addresses": [{"type": "ExternalIP", "ip": "203.0.113.5"}]}, None)
    assert bare.node.ipv4 is None and bare.node.vtep_mac is None and bare.node.health == "ok"


@pytest.mark.parametrize(
    "spec",
    [
        {"addresses": [{"type": "InternalIP", "ip": "not-an-ip"}]},
        {"ipam": {"podCIDRs": ["10.244.1.1/24"]}},
        {"routerIPs": ["10.244.1"]},
    ],
)
def test_unreadable_specs_are_value_errors(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        record_of("bad", spec, None)


def test_node_pod_cidrs_spec_first_then_podnets_then_ciliums_annotations() -> None:
    from podnet.kube.convert import node_pod_cidrs

    net = ipaddress.ip_network
    assert node_pod_cidrs(["10.244.3.0/24"], {"network.podnet.io/ipv4-pod-cidr": "10.9.0.0/24"}) == (
        net("10.244.3.0/24"),
    )
    both = {
        "network.podnet.io/ipv4-pod-cidr": "10.9.0.0/24",
        "network.cilium.io/ipv4-pod-cidr": "10.8.0.0/24",
    }
    assert node_pod_cidrs(None, both) == (net("10.9.0.0/24"),)
    cilium = {
        "network.cilium.io/ipv4-pod-cidr": "10.8.0.0/24",
        "network.cilium.io/ipv6-pod-cidr": "fd00:8::/64",
    }
    assert node_pod_cidrs([], cilium) == (net("10.8.0.0/24"), net("fd00:8::/64"))
    assert node_pod_cidrs(None, None) == ()
    with pytest.raises(ValueError):
        node_pod_cidrs(None, {"network.podnet.io/ipv4-pod-cidr": "10.9.0.1/24"})


def test_a_changed_pod_cidr_is_reported_not_applied() -> None:
    from podnet.agent.startup import cidr_change
    from podnet.ipam.cluster_pool import MultiCIDRAllocator

    allocator = MultiCIDRAllocator([ipaddress.ip_network("10.244.1.0/24")])
    same = NodeRecord(NodeInfo("node1", None, pod_cidrs=(ipaddress.ip_network("10.244.1.0/24"),)))
    moved = NodeRecord(NodeInfo("node1", None, pod_cidrs=(ipaddress.ip_network("10.244.7.0/24"),)))
    assert cidr_change(allocator, same) == "" and cidr_change(allocator, None) == ""
    said = cidr_change(allocator, moved)
    assert "10.244.7.0/24" in said and "keeps 10.244.1.0/24" in said and "restart" in said


def test_ipam_mode_kubernetes_needs_the_kubernetes_datastore() -> None:
    from podnet.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="needs datastore: kubernetes"):
        load_config({"ipam": {"mode": "kubernetes"}}, {}, None)
    assert (
        load_config({"ipam": {"mode": "kubernetes"}, "datastore": "kubernetes"}, {}, None).ipam_mode
        == "kubernetes"
    )


def test_kubernetes_times_round_trip_in_utc() -> None:
    from podnet.kube.convert import from_time, to_time

    assert to_time(0) == "1970-01-01T00:00:00Z"
    assert from_time(to_time(1795000000.7)) == 1795000000.0
