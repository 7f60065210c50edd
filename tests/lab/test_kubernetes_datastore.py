"""datastore: kubernetes (issue 13): agents and the operator on the lab's real API server. The same
connectivity test as on etcd; a deleted Node takes its routes off every peer; an API server that
dies leaves the datapath alone and the watches pick up again."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import signal
from collections.abc import Callable

import pytest
from labhelpers import assert_all_pods_reach_each_other, podnet_json, sh, wait_for
from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node
from lightkube.resources.core_v1 import Pod as KubePod

from podnet.kube.client import connect
from podnet.kube.resources import PodnetNode
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import KubeNamespace, Pod, Topology, load_topology
from podnet.util.proc import spawn, stop

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")


@pytest.mark.parametrize(
    ("example", "overrides"),
    [
        ("l2", []),  # native, autoDirectNodeRoutes
        ("l2", ["routingMode=tunnel", "autoDirectNodeRoutes=false"]),
        ("two-subnets", ["routingMode=native", "bgp.enabled=true"]),
        ("mixed", []),  # native where on-link, VXLAN to the routed rack (tunnelFallback)
    ],
    ids=["l2-native", "l2-tunnel", "two-subnets-bgp", "mixed-hybrid"],
)
def test_same_connectivity_on_the_kubernetes_datastore(
    lab_up: Callable[..., Topology], example: str, overrides: list[str]
) -> None:
    topo = lab_up(apply_overrides(load_topology(example), ["datastore=kubernetes", *overrides]))
    conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert conn["failed"] == 0 and conn["passed"] > 0
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    for node in topo.nodes:
        doc = status["nodes"][node.name]
        assert doc["kubernetes"]["state"] == "ok" and doc["kubernetes"]["version"] == "v1.20.2"
        assert doc["kvstore"]["state"] == "disabled"
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    cidrs = {o.metadata.name: o.spec["ipam"]["podCIDRs"] for o in admin.list(PodnetNode)}
    assert set(cidrs) == {n.name for n in topo.nodes} and all(len(c) == 1 for c in cidrs.values())


def _kube_state(topo: Topology) -> str:
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
    return str(status["nodes"]["node1"]["kubernetes"]["state"])


def test_node_deletion_and_an_api_server_restart(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("l2"), ["datastore=kubernetes"]))
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    node3_cidr = admin.get(PodnetNode, "node3").spec["ipam"]["podCIDRs"][0]

    # the API server dies: pods keep talking, status says so, nothing in the datapath changes
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(kubeapi.APISERVER)
    assert rec is not None and rec.running()
    routes_before = sh(topo, "node1", "ip", "route")
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not rec.running(), "kube-apiserver to die")
    assert_all_pods_reach_each_other(topo)
    wait_for(
        lambda: _kube_state(topo) == "unreachable",
        "status to say the API server is unreachable",
        timeout=40,
    )
    assert sh(topo, "node1", "ip", "route") == routes_before
    diag = podnet_json("diagnose", "--lab", topo.name, "node1-p1", "node2-p1", "-o", "json")
    assert diag["status"] == "works", diag  # the path's probes came back
    assert any("cannot reach the Kubernetes API server" in w for w in diag["warnings"]), diag["warnings"]
    kubeapi.ensure_kube_control_plane(topo, state)
    wait_for(
        lambda: _kube_state(topo) == "ok",
        "the agent to reach the API server again",
        timeout=40,
    )

    # the watches picked up again: deleting a Node takes its routes off the peers at once
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    admin.delete(Node, "node3")
    for peer in ("node1", "node2"):
        wait_for(
            lambda p=peer: node3_cidr not in sh(topo, p, "ip", "route"), f"{peer} to drop node3's route", 15
        )
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
    assert "node3" not in {p["name"] for p in status["nodes"]["node1"]["peers"]}


def test_the_lab_plays_kubelet_and_the_agent_reads_the_pod(lab_up: Callable[..., Topology]) -> None:
    """Pods as Pod objects in their namespaces, CNI_ARGS as a kubelet passes them; the agent
    records the Pod's UID, labels, annotations and its namespace's labels from the API server."""
    base = apply_overrides(load_topology("l2"), ["datastore=kubernetes"])
    pods = (
        Pod(
            "web-1",
            "node1",
            labels={"app": "web"},
            namespace="team-a",
            annotations={"ipam.podnet.io/ip-pool": "blue"},
        ),
        Pod("db-1", "node2"),
    )
    topo = lab_up(
        dataclasses.replace(base, pods=pods, namespaces=(KubeNamespace("team-a", {"tier": "web"}),))
    )
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    web = admin.get(KubePod, "web-1", namespace="team-a")
    state = st.LabState.load(topo.name)
    assert state is not None
    assert [ip.ip for ip in web.status.podIPs] == state.info["podIPs"]["web-1"]["ips"]
    assert web.spec.nodeName == "node1"
    records = [
        json.loads(p.read_text())
        for p in (st.lab_dir(topo.name) / "nodes" / "node1" / "state" / "endpoints").glob("lxc*.json")
    ]
    (record,) = records
    assert record["podNamespace"] == "team-a" and record["podName"] == "web-1"
    assert record["podUID"] == web.metadata.uid
    assert record["podLabels"] == {"app": "web"}
    assert record["podAnnotations"] == {"ipam.podnet.io/ip-pool": "blue"}
    assert record["namespaceLabels"]["tier"] == "web"
    assert_all_pods_reach_each_other(topo)


def test_ipam_mode_kubernetes_takes_the_node_cidrs_controller_manager_assigned(
    lab_up: Callable[..., Topology],
) -> None:
    """ipam.mode kubernetes (host scope): kube-controller-manager's node IPAM controller gives each
    Node a spec.podCIDRs; each pod's address is inside its Node's; peers route to those CIDRs."""
    topo = lab_up(apply_overrides(load_topology("l2"), ["datastore=kubernetes", "ipam.mode=kubernetes"]))
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    node_cidrs = {
        n.metadata.name: [ipaddress.ip_network(c) for c in n.spec.podCIDRs] for n in admin.list(Node)
    }
    assert set(node_cidrs) == {n.name for n in topo.nodes}
    state = st.LabState.load(topo.name)
    assert state is not None and state.process(kubeapi.CONTROLLER_MANAGER) is not None
    assert state.process("operator") is None  # controller-manager gives the CIDRs, not podnet's operator
    for name, info in state.info["podIPs"].items():
        ip = ipaddress.ip_address(info["ips"][0])
        assert any(ip in c for c in node_cidrs[info["node"]]), (
            f"{name} {ip} not in {node_cidrs[info['node']]}"
        )
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    for node in topo.nodes:
        doc = status["nodes"][node.name]
        peers = {p["name"]: p["podCIDRs"] for p in doc["peers"]}
        for peer, cidrs in peers.items():
            assert cidrs == [str(c) for c in node_cidrs[peer]]
    assert_all_pods_reach_each_other(topo)


def _lease_holder(admin: Client) -> tuple[str, int]:
    """The operator's Lease: who holds it and how often it changed hands ("" before it exists)."""
    try:
        lease = admin.get(Lease, "podnet-operator", namespace="kube-system")
    except ApiError as exc:
        if exc.status.code == 404:
            return "", 0
        raise
    return str(lease.spec.holderIdentity or ""), int(lease.spec.leaseTransitions or 0)


def test_two_operators_one_lease_and_the_standby_takes_over(lab_up: Callable[..., Topology]) -> None:
    """A rollout runs two operators at once: only the Lease's holder reconciles (Kubernetes has no
    transaction over two PodnetNodes, so two planners could give one CIDR to two nodes); the
    standby takes over when the holder is killed -9, and a clean stop gives the lease up."""
    topo = lab_up(apply_overrides(load_topology("l2"), ["datastore=kubernetes"]))
    admin = connect(kubeapi.kubeconfig_path(topo.name))
    state = st.LabState.load(topo.name)
    assert state is not None
    first = state.process("operator")
    assert first is not None and first.running()
    wait_for(
        lambda: _lease_holder(admin)[0].endswith(f"_{first.pid}"), "the lab's operator to hold the lease"
    )
    log = st.lab_dir(topo.name) / "logs" / "operator-standby.log"
    second = spawn(first.argv, first.netns, log)
    try:
        wait_for(lambda: "standing by" in log.read_text(), "the second operator to stand by", timeout=30)
        assert _lease_holder(admin)[0].endswith(f"_{first.pid}")

        os.kill(first.pid, signal.SIGKILL)  # no chance to give the lease up
        wait_for(lambda: not first.running(), "the first operator to die")
        admin.delete(Node, "node3")  # work only an operator does: mark node3's PodnetNode gone

        def marked() -> bool:
            annotations = admin.get(PodnetNode, "node3").metadata.annotations or {}
            return "podnet.io/gone-since" in annotations

        wait_for(marked, "the standby to take over and mark node3 gone", timeout=60)
        holder, transitions = _lease_holder(admin)
        assert holder.endswith(f"_{second.pid}") and transitions >= 1
        assert "this operator reconciles" in log.read_text()

        stop(second, grace=10.0)  # SIGTERM: a clean stop gives the lease up at once
        assert second.returncode == 0
        assert _lease_holder(admin)[0] == ""
    finally:
        stop(second, grace=10.0)
