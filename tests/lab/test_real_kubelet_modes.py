"""Real pods in the routing and IPAM modes the lab's simulated pods have (issue 27, item 3):
native routing with BGP in both families (dual stack), and IPAM by kube-controller-manager's
podCIDRs (host scope), by PodnetNode pools (crd), and by pool annotation (multi-pool). Each lab
runs real kubelets + containerd on node1 and node2; a pod pinned to each gets its address from
where the mode says, and they fetch from each other across the nodes in every family."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubehelpers import HTTP_PORT, SERVE, kubectl, lab_with_real_nodes, running
from labhelpers import podnet_json

from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

POOL = "ipam.podnet.io/ip-pool"
BLUE = ipaddress.ip_network("10.250.0.0/16")
POOLS = json.dumps({
    "default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}},
    "blue": {"ipv4": {"cidrs": [str(BLUE)], "maskSize": 27}},
})  # fmt: skip
Pod = dict[str, Any]


def _variant(example: str, where: Path, real: list[str], lab_pods: list[dict[str, str]]) -> Topology:
    """A built-in example with real kubelets on ``real`` and only ``lab_pods`` as lab pods, on the
    Kubernetes datastore (written to a file: the lab's commands read its topology from it)."""
    raw = yaml.safe_load(Path(load_topology(example).source).read_text())
    raw["pods"] = lab_pods
    raw["controlPlane"] = {"kubelet": real}
    raw["cluster"]["datastore"] = "kubernetes"
    path = where / f"{example}-real.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_topology(path)


def _real_nodes(*overrides: str) -> Topology:
    return apply_overrides(load_topology("real-nodes"), list(overrides))


def _lab(topo: Topology) -> Iterator[Topology]:
    yield from lab_with_real_nodes(topo, "rmode")


def _pinned(topo: Topology, nodes: tuple[str, str], annotations: dict[str, str] | None) -> tuple[Pod, Pod]:
    """One pod on each of ``nodes`` (annotated alike), Running."""
    for node in nodes:
        spec: dict[str, Any] = {"spec": {"nodeName": node}}
        if annotations:
            spec["metadata"] = {"annotations": annotations}
        kubectl(topo, "run", f"w-{node}", "--image=podnet.lab/busybox:1", "--labels=app=w",
                f"--overrides={json.dumps(spec)}", "--", "sh", "-c", SERVE)  # fmt: skip
    pods = running(topo, "app=w", 2)
    one = next(p for p in pods if p["spec"]["nodeName"] == nodes[0])
    two = next(p for p in pods if p["spec"]["nodeName"] == nodes[1])
    return one, two


def _ips(pod: Pod) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(p["ip"]) for p in pod["status"]["podIPs"]]


def _talk(topo: Topology, one: Pod, two: Pod) -> None:
    """Each pod fetches the other's page at each of its addresses (every family)."""
    for src, dst in ((one, two), (two, one)):
        for ip in _ips(dst):
            host = f"[{ip}]" if ip.version == 6 else str(ip)
            body = kubectl(
                topo, "exec", src["metadata"]["name"], "--", "wget", "-qO-", f"http://{host}:{HTTP_PORT}"
            )
            assert body.strip() == dst["metadata"]["name"], (src["metadata"]["name"], ip)


def _node_json(topo: Topology, kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(topo, "get", kind, name, "-o", "json")))


def _check_native_bgp_dual_stack(topo: Topology, one: Pod, two: Pod) -> None:
    for pod in (one, two):
        assert sorted(ip.version for ip in _ips(pod)) == [4, 6], pod["status"]["podIPs"]
    status = podnet_json("status", "--lab", topo.name, "-o", "json")
    for node in ("node1", "node2"):
        doc = status["nodes"][node]
        assert doc["routing"]["mode"] == "native", doc["routing"]
        sessions = doc["bgp"]["peers"]
        assert len(sessions) == 2 and all(s["state"] == "established" for s in sessions), sessions


def _check_host_scope(topo: Topology, one: Pod, two: Pod) -> None:
    for pod in (one, two):
        node = _node_json(topo, "node", pod["spec"]["nodeName"])
        cidr = ipaddress.ip_network(node["spec"]["podCIDR"])  # kube-controller-manager's
        assert _ips(pod)[0] in cidr, (pod["metadata"]["name"], cidr)


def _check_crd(topo: Topology, one: Pod, two: Pod) -> None:
    for pod in (one, two):
        pnn = _node_json(topo, "podnetnode", pod["spec"]["nodeName"])
        ip = str(_ips(pod)[0])
        assert ip in pnn["spec"]["ipam"]["pool"], (ip, sorted(pnn["spec"]["ipam"]["pool"])[:4])
        used = pnn["status"]["ipam"]["used"]
        assert used[ip]["owner"] == f"default/{pod['metadata']['name']}", used


def _check_multi_pool(topo: Topology, one: Pod, two: Pod) -> None:
    for pod in (one, two):
        assert _ips(pod)[0] in BLUE, pod["status"]["podIPs"]  # the annotation's pool


def _check_native_l2(topo: Topology, one: Pod, two: Pod) -> None:
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
    peer = next(p for p in status["nodes"]["node1"]["peers"] if p["name"] == "node2")
    assert "direct route" in peer["path"], peer  # autoDirectNodeRoutes: the pod CIDR via node2, no tunnel


def _check_hybrid(topo: Topology, one: Pod, two: Pod) -> None:
    status = podnet_json("status", "--lab", topo.name, "--node", "node1", "-o", "json")
    peers = {p["name"]: p["path"] for p in status["nodes"]["node1"]["peers"]}
    assert "direct route" in peers["node2"], peers
    assert "tunnel" in peers["node3"].lower(), peers  # the tunnel only where it must


ONE_TWO = ("node1", "node2")
Check = Callable[[Topology, Pod, Pod], None]
MODES: dict[str, tuple[Callable[[Path], Topology], tuple[str, str], dict[str, str], Check]] = {
    "native-bgp-dual-stack": (
        lambda d: _variant("dual-stack-bgp", d, ["node1", "node2"], []), ONE_TWO, {},
        _check_native_bgp_dual_stack,
    ),
    "native-l2": (
        lambda d: _variant("l2", d, ["node1", "node2"], [{"name": "p3", "node": "node3"}]), ONE_TWO, {},
        _check_native_l2,
    ),
    "hybrid": (
        lambda d: _variant("mixed", d, ["node1", "node3"], [{"name": "p2", "node": "node2"}]),
        ("node1", "node3"), {}, _check_hybrid,
    ),
    "host-scope": (lambda _: _real_nodes("ipam.mode=kubernetes"), ONE_TWO, {}, _check_host_scope),
    "crd": (lambda _: _real_nodes("ipam.mode=crd"), ONE_TWO, {}, _check_crd),
    "multi-pool": (
        lambda _: _real_nodes("ipam.mode=multi-pool", f"ipam.operator.autoCreatePodIPPools={POOLS}"),
        ONE_TWO, {POOL: "blue"}, _check_multi_pool,
    ),
}  # fmt: skip


@pytest.mark.parametrize("mode", sorted(MODES))
def test_real_pods_get_the_modes_addresses_and_talk_across_nodes(mode: str, tmp_path: Path) -> None:
    make, nodes, annotations, check = MODES[mode]
    lab = _lab(make(tmp_path))
    topo = next(lab)
    try:
        one, two = _pinned(topo, nodes, annotations)
        check(topo, one, two)
        _talk(topo, one, two)
        conn = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
        assert conn["failed"] == 0, [c for c in conn["results"] if c["status"] == "fail"]
    finally:
        next(lab, None)
