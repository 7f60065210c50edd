"""Topology validation: a bad file fails before anything is created, naming the key and value."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import TopologyError, load_topology, parse_topology
from podnet.lab.underlay import plan_underlay_routes

BASE: dict[str, Any] = {
    "name": "t",
    "networks": [
        {"name": "net1", "cidr": "172.16.2.0/24"},
        {"name": "net2", "cidr": "172.16.3.0/24"},
    ],
    "routers": [
        {
            "name": "r1",
            "interfaces": [
                {"network": "net1", "address": "172.16.2.1"},
                {"peer": "r2", "address": "172.16.0.1/30"},
            ],
        },
        {
            "name": "r2",
            "interfaces": [
                {"network": "net2", "address": "172.16.3.1"},
                {"peer": "r1", "address": "172.16.0.2/30"},
            ],
        },
    ],
    "nodes": [
        {"name": "node1", "network": "net1", "address": "172.16.2.2", "gateway": "172.16.2.1"},
        {"name": "node2", "network": "net2", "address": "172.16.3.2", "gateway": "172.16.3.1"},
    ],
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node: Any = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node[p]
    last = parts[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("nodes.0.network", "net9", r"nodes\[0\]\.network: unknown network 'net9'"),
        ("nodes.1.address", "172.16.3.1", r"172\.16\.3\.1 is already used by r2"),
        ("networks.1.cidr", "172.16.2.128/25", r"networks: net1 \(172\.16\.2\.0/24\) overlaps net2"),
        ("nodes.0.address", "172.16.9.2", r"nodes\[0\]\.address: 172\.16\.9\.2 is outside network net1"),
        ("nodes.0.gateway", DELETE, r"nodes\.node1\.gateway: missing"),
        (
            "nodes.0.gateway",
            "172.16.2.77",
            r"nodes\.node1\.gateway: 172\.16\.2\.77 is not the address of a router",
        ),
        ("networks.0.cidr", "172.16.2.0/33", r"networks\[0\]\.cidr: '172\.16\.2\.0/33' is not an IPv4 CIDR"),
        ("networks.0.mtu", 50, r"networks\[0\]\.mtu: 50 is not an MTU"),
        ("nodes.0.address", "172.16.2.255", r"broadcast"),
        ("routers.0.interfaces.1.peer", "r7", r"'r7' is not another router"),
        ("routers.1.interfaces.1.address", "172.16.0.6/30", r"different subnets"),
        ("nodes.0.name", "Node_1", r"nodes\[0\]\.name: 'Node_1' is not a valid name"),
        ("nodes.0.colour", "blue", r"nodes\[0\]\.colour: unknown key"),
        ("routers.0.asn", 0, r"routers\[0\]\.asn: 0 is not an AS number"),
        ("nodes.1.name", "node1", r"name 'node1' is used twice"),
        ("nodes", [], r"nodes: a lab needs at least one node"),
        ("pods", [{"name": "p1", "node": "node1", "namespace": "Team_A"}], r"pods\[0\]\.namespace: 'Team_A'"),
        ("pods", [{"name": "p1", "node": "node1", "annotations": ["x"]}], r"pods\[0\]\.annotations: must be"),
        ("namespaces", [{"name": "a", "colour": "b"}], r"namespaces\[0\]\.colour: unknown key"),
        ("namespaces", {"name": "a"}, r"namespaces: must be a list"),
        ("controlPlane", {"kubernetes": "yes"}, r"controlPlane\.kubernetes: 'yes' is not true or false"),
    ],
)
def test_bad_topology_names_the_key(path: str, value: Any, expected: str) -> None:
    with pytest.raises(TopologyError, match=expected):
        parse_topology(mutate(path, value))


def test_pods_in_namespaces_with_labels_and_annotations() -> None:
    data = copy.deepcopy(BASE)
    data["namespaces"] = [{"name": "team-a", "labels": {"tier": "web"}, "annotations": {"a": 1}}]
    data["pods"] = [{"name": "web", "node": "node1", "namespace": "team-a", "labels": {"app": "web"}}]
    topo = parse_topology(data)
    assert topo.namespaces[0].labels == {"tier": "web"} and topo.namespaces[0].annotations == {"a": "1"}
    (pod,) = topo.pods
    assert (pod.namespace, dict(pod.labels), dict(pod.annotations)) == ("team-a", {"app": "web"}, {})


def test_good_topology_gets_a_control_plane_at_a_free_address() -> None:
    topo = parse_topology(BASE)
    cp = topo.control_plane
    assert str(cp.primary.address) == "172.16.2.254/24"
    assert str(cp.gateway) == "172.16.2.1"


def test_pods_by_count_are_named_per_node() -> None:
    topo = parse_topology({**BASE, "pods": [{"count": 2}, {"name": "web", "node": "node2"}]})
    assert [(p.name, p.node) for p in topo.pods] == [
        ("node1-p1", "node1"),
        ("node1-p2", "node1"),
        ("node2-p1", "node2"),
        ("node2-p2", "node2"),
        ("web", "node2"),
    ]


def test_pod_on_unknown_node_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"pods\[0\]\.node: unknown node 'node7'"):
        parse_topology({**BASE, "pods": [{"name": "p", "node": "node7"}]})


def test_underlay_routes_cross_the_router_link() -> None:
    routes = {
        (r.router, str(r.dst)): [str(v) for v in r.via] for r in plan_underlay_routes(parse_topology(BASE))
    }
    assert routes == {("r1", "172.16.3.0/24"): ["172.16.0.2"], ("r2", "172.16.2.0/24"): ["172.16.0.1"]}


def test_leaf_spine_uses_both_spines() -> None:
    routes = plan_underlay_routes(load_topology("leaf-spine"))
    leaf1_to_rack3 = next(r for r in routes if r.router == "leaf1" and str(r.dst) == "172.20.3.0/24")
    assert [str(v) for v in leaf1_to_rack3.via] == ["172.31.1.2", "172.31.2.2"]


def test_node_config_merges_cluster_and_node_overrides() -> None:
    data = copy.deepcopy(BASE)
    data["cluster"] = {"routingMode": "tunnel", "ipam": {"mode": "cluster-pool"}}
    data["nodes"][0]["config"] = {"routingMode": "native"}
    topo = parse_topology(data)
    assert topo.node_config("node1") == {"routingMode": "native", "ipam": {"mode": "cluster-pool"}}
    assert topo.node_config("node2")["routingMode"] == "tunnel"


def test_set_overrides_parse_yaml_values_and_dotted_keys() -> None:
    topo = apply_overrides(
        parse_topology(BASE),
        ["routingMode=native", "autoDirectNodeRoutes=true", "ipam.operator.clusterPoolIPv4MaskSize=26"],
    )
    assert topo.cluster == {
        "routingMode": "native",
        "autoDirectNodeRoutes": True,
        "ipam": {"operator": {"clusterPoolIPv4MaskSize": 26}},
    }
    with pytest.raises(TopologyError, match="KEY=VALUE"):
        apply_overrides(topo, ["novalue"])


@pytest.mark.parametrize("name", ["l2", "two-subnets", "leaf-spine", "mixed"])
def test_examples_are_valid(name: str) -> None:
    topo = load_topology(name)
    assert topo.name == name and topo.nodes


def _pool(pool: str) -> dict[str, Any]:
    return {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": [pool]}}}


@pytest.mark.parametrize(
    ("cluster", "node_cidr", "match"),
    [
        (
            _pool("172.16.0.0/16"),
            None,
            r"clusterPoolIPv4PodCIDRList: pod CIDR 172\.16\.0\.0/16 overlaps network net1",
        ),
        (_pool("172.16.3.0/25"), None, r"overlaps network net2 \(172\.16\.3\.0/24\)"),
        (_pool("172.16.0.0/29"), None, r"pod CIDR 172\.16\.0\.0/29 contains r1\..*172\.16\.0\.1"),
        ({}, "172.16.2.0/28", r"node1\.podCIDR: pod CIDR 172\.16\.2\.0/28 overlaps network net1"),
    ],
)
def test_pod_pools_that_overlap_the_underlay_are_refused(
    cluster: dict[str, Any], node_cidr: str | None, match: str
) -> None:
    data = copy.deepcopy(BASE)
    data["cluster"] = cluster
    if node_cidr:
        data["nodes"][0]["podCIDR"] = node_cidr
    with pytest.raises(TopologyError, match=match):
        parse_topology(data)


def test_pools_outside_the_underlay_pass() -> None:
    data = copy.deepcopy(BASE)
    data["cluster"] = _pool("10.244.0.0/16")
    assert parse_topology(data).name == "t"


def test_a_key_given_twice_is_refused_naming_it_and_its_lines(tmp_path: Any) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(
        "name: dup\nnetworks:\n  - {name: lan, cidr: 192.168.1.0/24}\nnodes:\n"
        "  - name: node1\n    network: lan\n    address: 192.168.1.10\n    address: 192.168.1.11\n"
    )
    with pytest.raises(TopologyError, match=r"duplicate key 'address' at line 8 \(first at line 7\)"):
        load_topology(path)
