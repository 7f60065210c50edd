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
