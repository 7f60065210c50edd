"""Real Kubernetes nodes (issue 27): kubelet v1.20.2 and containerd on node1 and node2 of
examples/real-nodes.yaml ask podnet for their pods' networks; node3 stays a node the lab plays
kubelet for. kubectl makes a Deployment; its pods get podnet addresses from their node's pod
CIDR, answer TCP from pods on other nodes (through the tunnel, across two routers), `kubectl exec`
works, and scaling to 0 gives every address and veth back. After the lab is down the machine's
sysctls, /run, /var/lib and cgroups are as they were."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from kubehelpers import HTTP_PORT, SERVE, kubectl, lab_with_real_nodes, nodes_ready, pods, running, veths
from labhelpers import podnet_json, wait_for

from podnet.demo.kubelets import http_get
from podnet.lab import kubenode
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_up
from podnet.lab.topology import Topology, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")


def _real_lab(overrides: list[str]) -> Iterator[Topology]:
    yield from lab_with_real_nodes(apply_overrides(load_topology("real-nodes"), overrides), "real")


@pytest.fixture(scope="module")
def real_lab() -> Iterator[Topology]:
    yield from _real_lab([])  # VXLAN, legacy host routing


def _pod_cidrs(topo: Topology) -> dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    return {
        name: [ipaddress.ip_network(c) for c in doc["node"]["podCIDRs"]]
        for name, doc in status["nodes"].items()
    }


def test_a_deployment_on_real_kubelets_gets_podnet_addresses_and_talks_across_nodes(
    real_lab: Topology,
) -> None:
    topo = real_lab
    assert {"node1", "node2"} <= nodes_ready(topo)
    kubectl(
        topo,
        "create",
        "deployment",
        "web",
        "--image=podnet.lab/busybox:1",
        "--replicas=4",
        "--",
        "sh",
        "-c",
        SERVE,
    )
    web = running(topo, "app=web", 4)
    by_node = {p["spec"]["nodeName"] for p in web}
    assert by_node == {"node1", "node2"}, by_node  # the scheduler spreads them; node3 has no kubelet
    cidrs = _pod_cidrs(topo)
    for p in web:
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert any(ip in c for c in cidrs[p["spec"]["nodeName"]]), (p["metadata"]["name"], ip, cidrs)
    # TCP from the lab's pod on node3 to every real pod (node1 is behind both routers)
    pod3 = st.ns_name(topo.name, "pod3")
    for p in web:
        assert http_get(pod3, p["status"]["podIP"], HTTP_PORT) == p["metadata"]["name"]
    # real pod to real pod across nodes, through the API server's exec into the kubelet
    one = next(p for p in web if p["spec"]["nodeName"] == "node1")
    two = next(p for p in web if p["spec"]["nodeName"] == "node2")
    body = kubectl(
        topo, "exec", one["metadata"]["name"], "--", "wget", "-qO-", f"http://{two['status']['podIP']}:8080"
    )
    assert body.strip() == two["metadata"]["name"]
    # the verification commands see the real pods as lab hosts (their network namespaces attached)
    conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert conn["failed"] == 0, [c for c in conn["results"] if c["status"] == "fail"]
    names = {p["metadata"]["name"] for p in web}
    assert any(name in c["from"] or name in c["to"] for c in conn["results"] for name in names), conn
    diag = podnet_json("diagnose", "--lab", topo.name, "pod3", one["metadata"]["name"], "-o", "json")
    assert diag["status"] == "works" and diag["dst"]["kind"] == "pod", diag["verdict"]
    # scale to 0: containerd's CNI DEL gives every address and veth back
    veths_before = {n: veths(topo, n) for n in ("node1", "node2")}
    assert all(veths_before.values()), veths_before
    kubectl(topo, "scale", "deployment", "web", "--replicas=0")
    wait_for(lambda: not pods(topo, "app=web"), "the pods of web to be gone", 120)

    def released() -> bool:
        status = podnet_json("status", "--lab", topo.name, "-o", "json")
        used = {n: status["nodes"][n]["ipam"]["used"] for n in ("node1", "node2")}
        return all(not v for v in used.values()) and not any(veths(topo, n) for n in ("node1", "node2"))

    wait_for(released, "node1 and node2 to release every pod address and veth", 60)
    kubectl(topo, "delete", "deployment", "web")


def _kubelet_pid(topo: Topology, node: str) -> int | None:
    """The kubelet the node's shell runs now (its child named kubelet)."""
    state = st.LabState.load(topo.name)
    rec = state.process(f"kubenode-{node}") if state is not None else None
    assert rec is not None
    kids = subprocess.run(["pgrep", "-P", str(rec.pid), "-x", "kubelet"], capture_output=True, text=True)
    pids = [int(p) for p in kids.stdout.split()]
    return pids[0] if pids else None


def test_kubelet_killed_9_comes_back_and_keeps_its_pods(real_lab: Topology) -> None:
    topo = real_lab
    kubectl(
        topo,
        "create",
        "deployment",
        "keep",
        "--image=podnet.lab/busybox:1",
        "--replicas=2",
        "--",
        "sh",
        "-c",
        SERVE,
    )
    before = {
        p["metadata"]["name"]: (p["spec"]["nodeName"], p["status"]["podIP"])
        for p in running(topo, "app=keep", 2)
    }
    node = next(iter(before.values()))[0]
    old = _kubelet_pid(topo, node)
    assert old is not None
    os.kill(old, 9)
    wait_for(lambda: _kubelet_pid(topo, node) not in (None, old), f"kubelet on {node} to be restarted", 30)
    pod3 = st.ns_name(topo.name, "pod3")
    after = {
        p["metadata"]["name"]: (p["spec"]["nodeName"], p["status"]["podIP"])
        for p in running(topo, "app=keep", 2)
    }
    assert after == before  # the same pods, the same addresses
    for name, (_, ip) in after.items():
        assert http_get(pod3, ip, HTTP_PORT) == name
    kubectl(topo, "delete", "deployment", "keep")
    wait_for(lambda: not pods(topo, "app=keep"), "the pods of keep to be gone", 120)


def test_a_real_node_is_one_process_tree_in_its_own_mount_namespace(real_lab: Topology) -> None:
    """kubelet sees its per-node /var/lib and the sysctl values it wants; the machine does not."""
    state = st.LabState.load(real_lab.name)
    assert state is not None
    rec = state.process("kubenode-node1")
    assert rec is not None and rec.running()
    kids = subprocess.run(["pgrep", "-P", str(rec.pid)], capture_output=True, text=True).stdout.split()
    assert kids, "the node's shell has no children"
    assert os.stat(f"/proc/{rec.pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    node_ns = f"/run/netns/{st.ns_name(real_lab.name, 'node1')}"
    assert os.stat(f"/proc/{rec.pid}/ns/net").st_ino == os.stat(node_ns).st_ino
    inside = subprocess.run(
        ["nsenter", f"--mount=/proc/{rec.pid}/ns/mnt", "cat", "/proc/sys/vm/overcommit_memory"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert inside == kubenode.SYSCTL_SHIMS["vm/overcommit_memory"]  # (the machine's: checked at the end)
    bring_up(real_lab)  # idempotent: the running node is left alone
    again = st.LabState.load(real_lab.name)
    assert again is not None and again.process("kubenode-node1") == rec


def test_real_pods_on_geneve_in_ebpf_with_bpf_host_routing() -> None:
    """The same Deployment on the eBPF datapath: Geneve encapsulated by tc programs, pod packets
    routed by BPF host routing on the pods' veths (which containerd's CNI ADD made)."""
    lab = _real_lab(["tunnelProtocol=geneve", "bpf.hostLegacyRouting=false"])
    topo = next(lab)
    try:
        kubectl(
            topo,
            "create",
            "deployment",
            "web",
            "--image=podnet.lab/busybox:1",
            "--replicas=2",
            "--",
            "sh",
            "-c",
            SERVE,
        )
        web = running(topo, "app=web", 2)
        pod3 = st.ns_name(topo.name, "pod3")
        for p in web:
            assert http_get(pod3, p["status"]["podIP"], HTTP_PORT) == p["metadata"]["name"]
        status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
        doc = status["nodes"]["node1"]
        assert doc["routing"]["tunnelProtocol"] == "geneve" and doc["hostRouting"]["mode"] == "BPF", doc[
            "hostRouting"
        ]
        conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
        assert conn["failed"] == 0, [c for c in conn["results"] if c["status"] == "fail"]
    finally:
        next(lab, None)  # the lab down and the machine check


def _enforced(topo: Topology, applied: str) -> None:
    """Until both real nodes' agents enforce the NetworkPolicy ``kubectl apply -o json`` returned."""
    doc = json.loads(applied)
    version = max(int(i["metadata"]["resourceVersion"]) for i in doc.get("items", [doc]))

    def covered() -> bool:
        for node in ("node1", "node2"):
            status = podnet_json("status", "--lab", topo.name, "--node", node, "-o", "json")
            seen = (status["nodes"][node].get("policy") or {}).get("covered") or {}
            if int(seen.get("networkpolicies", 0)) < version:
                return False
        return True

    wait_for(covered, f"both nodes to enforce NetworkPolicy version {version}", 30)


def test_network_policy_isolates_real_pods(real_lab: Topology) -> None:
    """kubectl applies a NetworkPolicy; real pods on two real nodes are isolated by it (a real
    pod and the lab's pod are refused), then a second policy lets the selected peers in."""
    topo = real_lab
    for node in ("node1", "node2"):
        pinned = json.dumps({"spec": {"nodeName": node}})
        kubectl(
            topo,
            "run",
            f"np-{node}",
            "--image=podnet.lab/busybox:1",
            "--labels=app=np",
            f"--overrides={pinned}",
            "--",
            "sh",
            "-c",
            SERVE,
        )
    one, two = sorted(running(topo, "app=np", 2), key=lambda p: p["spec"]["nodeName"])
    url = f"http://{two['status']['podIP']}:{HTTP_PORT}"
    pod3 = st.ns_name(topo.name, "pod3")
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np-deny", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "np"}}, "policyTypes": ["Ingress"]},
    }
    allow = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np-from-np", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "np"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "np"}}}], "ports": [{"port": HTTP_PORT}]}
            ],
        },
    }
    try:
        _enforced(topo, kubectl(topo, "apply", "-o", "json", "-f", "-", stdin=json.dumps(deny)))
        assert http_get(pod3, two["status"]["podIP"], HTTP_PORT).startswith("error")
        refused = kubectl(
            topo, "exec", one["metadata"]["name"], "--", "timeout", "3", "wget", "-qO-", url, check=False
        )
        assert refused.strip() != two["metadata"]["name"]
        _enforced(topo, kubectl(topo, "apply", "-o", "json", "-f", "-", stdin=json.dumps(allow)))
        body = kubectl(topo, "exec", one["metadata"]["name"], "--", "wget", "-qO-", url)
        assert body.strip() == two["metadata"]["name"]  # the peer the second policy names
        assert http_get(pod3, two["status"]["podIP"], HTTP_PORT).startswith("error")  # pod3 is not one
    finally:
        kubectl(topo, "delete", "networkpolicy", "np-deny", "np-from-np", "--ignore-not-found", check=False)
        kubectl(topo, "delete", "pod", "-l", "app=np", check=False)
        wait_for(lambda: not pods(topo, "app=np"), "the np pods to be gone", 120)
