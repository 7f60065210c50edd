"""podnet installed as a user installs it (issue 27): real kubelet + containerd nodes that start
without podnet, the image scripts/build-image.sh builds imported into their containerd, and
deploy/kubernetes/ applied with kubectl. The DaemonSet's init container puts the compiled plugin
and the conflist into the node's own /opt/cni/bin and /etc/cni/net.d, the agent runs as its pod,
the operator as a Deployment; a Deployment's pods then get addresses and talk across nodes. An
agent pod deleted and recreated by its DaemonSet costs running pods no packet. Afterwards the
machine's /etc, /opt, /run, sysctls, mounts and cgroups are as they were."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubehelpers import HTTP_PORT, SERVE, kubectl, lab_with_real_nodes, nodes_ready, pods, running
from labhelpers import podnet_json, wait_for

from podnet.demo.kubelets import http_get
from podnet.lab import kubeapi, kubenode
from podnet.lab import state as st
from podnet.lab.podnetimage import NAME as IMAGE
from podnet.lab.topology import Topology, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

AGENTS = "app.kubernetes.io/name=podnet-agent"
OPERATOR = "app.kubernetes.io/name=podnet-operator"
ELF = b"\x7fELF"


def _lab(install: str) -> Iterator[Topology]:
    yield from lab_with_real_nodes(
        dataclasses.replace(load_topology("kube-install"), podnet_install=install), "kinst"
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Topology]:
    yield from _lab("manifests")


def _cross_node_http(topo: Topology, app: str, count: int, pool: str) -> list[dict[str, object]]:
    web = running(topo, f"app={app}", count)
    assert {p["spec"]["nodeName"] for p in web} == {"node1", "node2"}
    for p in web:
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(pool), p["status"]
    one = next(p for p in web if p["spec"]["nodeName"] == "node1")
    two = next(p for p in web if p["spec"]["nodeName"] == "node2")
    for src, dst in ((one, two), (two, one)):
        url = f"http://{dst['status']['podIP']}:{HTTP_PORT}"
        body = kubectl(topo, "exec", src["metadata"]["name"], "--", "wget", "-qO-", url)
        assert body.strip() == dst["metadata"]["name"]
    return web


def test_podnet_runs_from_its_image_as_a_daemonset_and_an_operator(installed: Topology) -> None:
    topo = installed
    agents = running(topo, AGENTS, 2, "kube-system")
    assert {p["spec"]["nodeName"] for p in agents} == {"node1", "node2"}
    operator = running(topo, OPERATOR, 1, "kube-system")
    for p in [*agents, *operator]:
        images = {c["image"] for c in p["spec"]["containers"] + p["spec"].get("initContainers", [])}
        assert images == {IMAGE}, images
    assert nodes_ready(topo) == {"node1", "node2"}
    for node in ("node1", "node2"):
        paths = kubenode.NodePaths.of(topo.name, node)
        plugin = paths.cni_bin / "podnet"
        assert plugin.is_file() and not plugin.is_symlink()
        assert plugin.read_bytes()[:4] == ELF  # the compiled plugin, never a launcher into the image
        conf = json.loads((paths.cni_conf / "05-podnet.conflist").read_text())
        assert conf["plugins"][0]["type"] == "podnet"
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    for node in ("node1", "node2"):
        doc = status["nodes"][node]
        assert doc["agent"]["ready"] and not doc["agent"]["errors"], doc["agent"]  # nft: /etc/protocols
        assert doc["kubernetes"]["state"] == "ok", doc["kubernetes"]


def test_a_deployment_gets_addresses_from_the_daemonset_installed_podnet(installed: Topology) -> None:
    topo = installed
    kubectl(topo, "create", "deployment", "web", "--image=podnet.lab/busybox:1", "--replicas=4",
            "--", "sh", "-c", SERVE)  # fmt: skip
    _cross_node_http(topo, "web", 4, "10.244.0.0/16")
    conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert conn["failed"] == 0, [c for c in conn["results"] if c["status"] == "fail"]
    kubectl(topo, "delete", "deployment", "web")
    wait_for(lambda: not pods(topo, "app=web"), "the pods of web to be gone", 120)


def _agent_ready(topo: Topology, node: str) -> bool:
    try:
        status = podnet_json("status", "--lab", topo.name, "--node", node, "-o", "json", code=None)
    except (json.JSONDecodeError, subprocess.SubprocessError):
        return False
    return bool(status.get("nodes", {}).get(node, {}).get("agent", {}).get("ready"))


def test_agent_pod_deleted_and_recreated_costs_running_pods_no_packet(installed: Topology) -> None:
    topo = installed
    for node in ("node1", "node2"):  # one pod pinned to each node
        pinned = json.dumps({"spec": {"nodeName": node}})
        kubectl(topo, "run", f"ping-{node}", "--image=podnet.lab/busybox:1", "--labels=app=ping",
                f"--overrides={pinned}", "--", "sh", "-c", SERVE)  # fmt: skip
    two = running(topo, "app=ping", 2)
    src = next(p for p in two if p["spec"]["nodeName"] == "node1")
    dst = next(p for p in two if p["spec"]["nodeName"] == "node2")
    state = st.LabState.load(topo.name)
    assert state is not None
    kubenode.attach_real_pods(topo, state)  # the pods' namespaces by name, as lab commands see them
    ns = st.ns_name(topo.name, kubenode.pod_host("default", src["metadata"]["name"]))
    old = next(p for p in pods(topo, AGENTS, "kube-system") if p["spec"]["nodeName"] == "node1")
    # 0.1 s apart for at most 60 s: across the delete, the old agent's stop, the new pod's start
    ping = subprocess.Popen(
        ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-i", "0.1", "-w", "60", dst["status"]["podIP"]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        kubectl(topo, "-n", "kube-system", "delete", "pod", old["metadata"]["name"], "--wait=true")
        new = running(topo, AGENTS, 2, "kube-system")
        assert old["metadata"]["uid"] not in {p["metadata"]["uid"] for p in new}
        wait_for(lambda: _agent_ready(topo, "node1"), "node1's new agent to be ready", 120)
        out, _ = ping.communicate(timeout=90)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    sent, got = int(found.group(1)), int(found.group(2))
    assert sent >= 300 and got == sent, out  # not one echo lost while the agent was replaced
    assert http_get(ns, dst["status"]["podIP"], HTTP_PORT) == dst["metadata"]["name"]
    kubectl(topo, "delete", "pod", "-l", "app=ping")
    wait_for(lambda: not pods(topo, "app=ping"), "the pods of ping to be gone", 120)


def test_kubectl_apply_of_the_unchanged_manifests_installs_podnet() -> None:
    """Nodes without podnet stay NotReady; `kubectl apply -f deploy/kubernetes/` (the files as
    they are in the repository, the ConfigMap's defaults included) makes them Ready."""
    lab = _lab("none")
    topo = next(lab)
    try:
        assert not nodes_ready(topo)
        assert not (kubenode.NodePaths.of(topo.name, "node1").cni_bin / "podnet").exists()
        kubectl(topo, "apply", "-f", str(kubeapi.MANIFESTS))
        for what in ("daemonset/podnet-agent", "deployment/podnet-operator"):
            kubectl(topo, "-n", "kube-system", "rollout", "status", what, "--timeout=180s")
        wait_for(lambda: nodes_ready(topo) == {"node1", "node2"}, "both nodes Ready", 120)
        shipped = Path(kubeapi.MANIFESTS / "podnet.yaml").read_text()
        assert "10.244.0.0/16" in shipped  # the pool the ConfigMap as shipped gives
        for node in ("node1", "node2"):  # one pod pinned to each: the scheduler may put both on one
            pinned = json.dumps({"spec": {"nodeName": node}})
            kubectl(topo, "run", f"plain-{node}", "--image=podnet.lab/busybox:1", "--labels=app=plain",
                    f"--overrides={pinned}", "--", "sh", "-c", SERVE)  # fmt: skip
        _cross_node_http(topo, "plain", 2, "10.244.0.0/16")
    finally:
        next(lab, None)
