"""NetworkPolicy conformance on real Kubernetes pods (issue 28): the upstream e2e netpol world
(namespaces x, y, z labelled ns=<name>, pods a, b, c labelled pod=<name>, containers declaring the
named ports serve-80-tcp/udp and serve-81-tcp/udp) made with kubectl on two real nodes (kubelet +
containerd, podnet's CNI), spread so that most pairs cross nodes. Each pod's network namespace
(the one containerd made and podnet wired) serves TCP and UDP on 80 and 81; every pod probes every
pod and port, compared with the oracle's truth table. Every upstream case runs in

- ``tunnel-ipv4``: VXLAN across two routers (examples/real-nodes.yaml), IPv4;
- ``native-bgp-bpf-ipv6``: native routing with BGP, dual stack, BPF host routing
  (examples/dual-stack-bgp.yaml), probed over IPv6.

The policies of a case are applied before its probes; the pods exist before the first case (the
lab-pod tier checks the other order)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubehelpers import kubectl, lab_with_real_nodes, running
from netpolhelpers import World, apply, check, start_servers, stop_servers
from policycases import UPSTREAM

from podnet.lab import kubenode
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

NAMED = {(f"serve-{port}-{proto.lower()}", proto): port for port in (80, 81) for proto in ("TCP", "UDP")}
PLACES = {
    "x": ("node1", "node2", "node1"),
    "y": ("node2", "node1", "node2"),
    "z": ("node1", "node2", "node1"),
}


def _dual_stack_bgp(where: Path) -> Topology:
    raw = yaml.safe_load(Path(load_topology("dual-stack-bgp").source).read_text())
    raw["pods"] = []
    raw["controlPlane"] = {"kubelet": ["node1", "node2"]}
    raw["cluster"]["datastore"] = "kubernetes"
    path = where / "dual-stack-bgp-real.yaml"
    path.write_text(yaml.safe_dump(raw))
    return apply_overrides(load_topology(path), ["bpf.hostLegacyRouting=false"])


DATAPATHS = {
    "tunnel-ipv4": (lambda _where: load_topology("real-nodes"), 4),
    "native-bgp-bpf-ipv6": (_dual_stack_bgp, 6),
}


def _pod(ns: str, name: str, node: str) -> dict[str, Any]:
    ports = [
        {"name": n, "containerPort": port, "protocol": proto} for (n, proto), port in sorted(NAMED.items())
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"pod": name, "netpol": "world"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "c",
                    "image": "podnet.lab/busybox:1",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                    "ports": ports,
                }
            ],
        },
    }


@pytest.fixture(scope="module", params=sorted(DATAPATHS))
def real_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    make, family = DATAPATHS[request.param]
    lab = lab_with_real_nodes(make(tmp_path_factory.mktemp("topo")), "rnetpol")
    topo = next(lab)
    servers: list[Any] = []
    try:
        docs = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}}
            for ns in PLACES
        ]
        docs += [
            _pod(ns, name, node)
            for ns, nodes in PLACES.items()
            for name, node in zip("abc", nodes, strict=True)
        ]
        kubectl(
            topo, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        )
        found = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p
            for ns in PLACES
            for p in running(topo, "netpol=world", 3, namespace=ns)
        }
        state = st.LabState.load(topo.name)
        assert state is not None
        attached = kubenode.attach_real_pods(topo, state)  # each pod's netns, named for the lab
        pods = []
        for (ns, name), obj in sorted(found.items()):
            host = kubenode.pod_host(ns, name)
            assert host in attached, f"{host} has no attached network namespace: {sorted(attached)}"
            ips = [ipaddress.ip_address(i["ip"]) for i in obj["status"]["podIPs"]]
            ip = next(str(i) for i in ips if i.version == family)
            labels = dict(obj["metadata"]["labels"])
            pods.append(
                {"host": host, "namespace": ns, "name": name, "labels": labels, "ip": ip, "namedPorts": NAMED}
            )
        servers = start_servers(topo.name, [p["host"] for p in pods])
        yield World(topo, pods, {ns: {"ns": ns} for ns in PLACES}, servers, family, request.param)
    finally:
        stop_servers(servers)
        next(lab, None)  # the lab down and the machine check


@pytest.mark.parametrize("case", sorted(UPSTREAM))
def test_upstream_case_on_real_pods_matches_the_truth_table(real_world: World, case: str) -> None:
    apply(real_world, UPSTREAM[case])
    check(real_world, UPSTREAM[case])
