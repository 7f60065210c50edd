"""Real Kubernetes nodes (issue 27): kubelet v1.20.2 and containerd on node1 and node2 of
examples/real-nodes.yaml ask podnet for their pods' networks; node3 stays a node the lab plays
kubelet for. kubectl makes a Deployment; its pods get podnet addresses from their node's pod
CIDR, answer TCP from pods on other nodes (through the tunnel, across two routers), `kubectl exec`
works, and scaling to 0 gives every address and veth back. After the lab is down the machine's
sysctls, /run, /var/lib and cgroups are as they were."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import podnet_json, wait_for

from podnet import owned
from podnet.demo.kubelets import http_get
from podnet.lab import kubeapi, kubenode
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

MACHINE_SYSCTLS = [f"/proc/sys/{k}" for k in kubenode.SYSCTL_SHIMS]
MACHINE_PATHS = ["/run/containerd", "/var/lib/kubelet", "/var/lib/containerd", "/var/log/pods",
                 "/usr/libexec/kubernetes", "/var/lib/cni"]  # fmt: skip
HTTP_PORT = 8080
# PID 1 of a container ignores SIGTERM unless it traps it: without the trap every pod would take
# its whole 30 s grace period to stop
SERVE = "hostname > /www/index.html; httpd -f -p 8080 -h /www & trap 'exit 0' TERM; wait"


def _machine() -> dict[str, Any]:
    """What a real node must not change on the machine: sysctls, paths, cgroup roots."""
    cgroups = sorted(
        str(d) for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir() for d in h.glob(f"{st.NS_PREFIX}*")
    )
    return {
        "sysctls": {p: Path(p).read_text() for p in MACHINE_SYSCTLS},
        "paths": {p: os.path.exists(p) for p in MACHINE_PATHS},
        "cgroups": cgroups,
    }


def _real_lab(overrides: list[str]) -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    before = _machine()
    topo = apply_overrides(load_topology("real-nodes"), overrides)
    topo = dataclasses.replace(topo, name=f"t{secrets.token_hex(2)}-real"[:16])
    try:
        bring_up(topo)
        yield topo
    finally:
        bring_down(topo.name)
    after = _machine()
    mine = [c for c in after["cgroups"] if topo.name in c]
    assert not mine, f"cgroups left behind: {mine}"
    assert after["sysctls"] == before["sysctls"]
    assert after["paths"] == before["paths"]


@pytest.fixture(scope="module")
def real_lab() -> Iterator[Topology]:
    yield from _real_lab([])  # VXLAN, legacy host routing


def kubectl(topo: Topology, *args: str, check: bool = True) -> str:
    argv = [str(kubeapi.binary("kubectl")), f"--kubeconfig={kubeapi.kubeconfig_path(topo.name)}", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr or res.stdout}")
    return res.stdout


def _pods(topo: Topology, app: str) -> list[dict[str, Any]]:
    doc = json.loads(kubectl(topo, "get", "pods", "-l", f"app={app}", "-o", "json"))
    return list(doc["items"])


def _running(topo: Topology, app: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = [
            p
            for p in _pods(topo, app)
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        return len(found) == count

    wait_for(ready, f"{count} Running pods of {app}", 120)
    return found


def _pod_cidrs(topo: Topology) -> dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    return {
        name: [ipaddress.ip_network(c) for c in doc["node"]["podCIDRs"]]
        for name, doc in status["nodes"].items()
    }


def _veths(topo: Topology, node: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", st.ns_name(topo.name, node), "-j", "link", "show", "type", "veth"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith(owned.ENDPOINT_PREFIX)
    ]


def test_a_deployment_on_real_kubelets_gets_podnet_addresses_and_talks_across_nodes(
    real_lab: Topology,
) -> None:
    topo = real_lab
    nodes = json.loads(kubectl(topo, "get", "nodes", "-o", "json"))["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
    }
    assert {"node1", "node2"} <= ready, nodes
    serve = SERVE
    kubectl(topo, "create", "deployment", "web", "--image=podnet.lab/busybox:1", "--replicas=4",
            "--", "sh", "-c", serve)  # fmt: skip
    pods = _running(topo, "web", 4)
    by_node = {p["spec"]["nodeName"] for p in pods}
    assert by_node == {"node1", "node2"}, by_node  # the scheduler spreads them; node3 has no kubelet
    cidrs = _pod_cidrs(topo)
    for p in pods:
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert any(ip in c for c in cidrs[p["spec"]["nodeName"]]), (p["metadata"]["name"], ip, cidrs)
    # TCP from the lab's pod on node3 to every real pod (node1 is behind both routers)
    pod3 = st.ns_name(topo.name, "pod3")
    for p in pods:
        assert http_get(pod3, p["status"]["podIP"], HTTP_PORT) == p["metadata"]["name"]
    # real pod to real pod across nodes, through the API server's exec into the kubelet
    one = next(p for p in pods if p["spec"]["nodeName"] == "node1")
    two = next(p for p in pods if p["spec"]["nodeName"] == "node2")
    body = kubectl(
        topo, "exec", one["metadata"]["name"], "--", "wget", "-qO-", f"http://{two['status']['podIP']}:8080"
    )
    assert body.strip() == two["metadata"]["name"]
    # the verification commands see the real pods as lab hosts (their network namespaces attached)
    conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert conn["failed"] == 0, [c for c in conn["results"] if c["status"] == "fail"]
    names = {p["metadata"]["name"] for p in pods}
    assert any(name in c["from"] or name in c["to"] for c in conn["results"] for name in names), conn
    diag = podnet_json("diagnose", "--lab", topo.name, "pod3", one["metadata"]["name"], "-o", "json")
    assert diag["status"] == "works" and diag["dst"]["kind"] == "pod", diag["verdict"]
    # scale to 0: containerd's CNI DEL gives every address and veth back
    veths_before = {n: _veths(topo, n) for n in ("node1", "node2")}
    assert all(veths_before.values()), veths_before
    kubectl(topo, "scale", "deployment", "web", "--replicas=0")
    wait_for(lambda: not _pods(topo, "web"), "the pods of web to be gone", 120)

    def released() -> bool:
        status = podnet_json("status", "--lab", topo.name, "-o", "json")
        used = {n: status["nodes"][n]["ipam"]["used"] for n in ("node1", "node2")}
        return all(not v for v in used.values()) and not any(_veths(topo, n) for n in ("node1", "node2"))

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
    kubectl(topo, "create", "deployment", "keep", "--image=podnet.lab/busybox:1", "--replicas=2",
            "--", "sh", "-c", SERVE)  # fmt: skip
    before = {
        p["metadata"]["name"]: (p["spec"]["nodeName"], p["status"]["podIP"])
        for p in _running(topo, "keep", 2)
    }
    node = next(iter(before.values()))[0]
    old = _kubelet_pid(topo, node)
    assert old is not None
    os.kill(old, 9)
    wait_for(lambda: _kubelet_pid(topo, node) not in (None, old), f"kubelet on {node} to be restarted", 30)
    pod3 = st.ns_name(topo.name, "pod3")
    after = {
        p["metadata"]["name"]: (p["spec"]["nodeName"], p["status"]["podIP"])
        for p in _running(topo, "keep", 2)
    }
    assert after == before  # the same pods, the same addresses
    for name, (_, ip) in after.items():
        assert http_get(pod3, ip, HTTP_PORT) == name
    kubectl(topo, "delete", "deployment", "keep")
    wait_for(lambda: not _pods(topo, "keep"), "the pods of keep to be gone", 120)


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
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
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
        kubectl(topo, "create", "deployment", "web", "--image=podnet.lab/busybox:1", "--replicas=2",
                "--", "sh", "-c", SERVE)  # fmt: skip
        pods = _running(topo, "web", 2)
        pod3 = st.ns_name(topo.name, "pod3")
        for p in pods:
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
