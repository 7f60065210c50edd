"""NetworkPolicy conformance (issue 28), modelled on the upstream e2e netpol suite: namespaces x,
y, z with pods a, b, c (examples/netpol.yaml, spread over two nodes), each serving TCP and UDP on
80 and 81; after each policy change every pod probes every pod on every port, and the result must
be the truth table the independent oracle (tests/policyoracle.py) computes from the objects. A
mismatch is probed once more (no other retry budget). The lab waits for enforcement by asking
each agent which watch events its table includes, not by sleeping."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from labhelpers import PODNET, wait_for
from policycases import UPSTREAM, pol
from policyoracle import allowed as oracle

from podnet.lab import cluster as cl
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.util import netns

pytestmark = pytest.mark.lab

PROBES = [(proto, port) for proto in ("TCP", "UDP") for port in (80, 81)]
TIMEOUT = 1.0  # seconds a denied probe waits (dropped packets get no answer)
SERVER = Path(__file__).with_name("netpolserver.py")


@dataclasses.dataclass
class World:
    topo: Topology
    pods: list[dict[str, Any]]  # {"host", "namespace", "name", "labels", "ip", "namedPorts"}
    ns_labels: dict[str, dict[str, str]]
    servers: list[subprocess.Popen[bytes]]


def _kube() -> Any:
    from podnet.kube.client import connect

    return connect


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    topo = dataclasses.replace(load_topology("netpol"), name=f"t{secrets.token_hex(2)}-netpol"[:16])
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bring_up(topo)
        state = st.LabState.load(topo.name)
        assert state is not None
        pods = []
        for p in topo.pods:
            ip = state.info["podIPs"][p.name]["ips"][0]
            pods.append(
                {
                    "host": p.name,
                    "namespace": p.namespace,
                    "name": p.name,
                    "labels": dict(p.labels),
                    "ip": ip,
                    "namedPorts": {},
                }
            )
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    st.ns_name(topo.name, p.name),
                    sys.executable,
                    str(SERVER),
                    "80",
                    "81",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            servers.append(proc)
        for proc in servers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        ns_labels = {n.name: dict(n.labels) for n in topo.namespaces}
        yield World(topo, pods, ns_labels, servers)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        bring_down(topo.name)


# ---- probing ----------------------------------------------------------------------------------


def _probe(sock: socket.socket, proto: str, ip: str, port: int) -> bool:
    try:
        sock.settimeout(TIMEOUT)
        if proto == "TCP":
            if sock.connect_ex((ip, port)) != 0:
                return False
            return sock.recv(1) == b"k"
        sock.connect((ip, port))
        sock.send(b"probe")
        return sock.recv(64) == b"probe"
    except OSError:
        return False
    finally:
        sock.close()


def probe_all(
    w: World, pairs: list[tuple[int, int, str, int]] | None = None
) -> dict[tuple[int, int, str, int], bool]:
    """Every (source pod, destination pod, protocol, port), in parallel; sockets are made in the
    source pod's namespace."""
    wanted = pairs or [
        (i, j, proto, port) for i in range(len(w.pods)) for j in range(len(w.pods)) for proto, port in PROBES
    ]
    socks = {}
    for i in sorted({i for i, *_ in wanted}):
        with netns.entered(st.ns_name(w.topo.name, w.pods[i]["host"])):
            for key in (k for k in wanted if k[0] == i):
                kind = socket.SOCK_STREAM if key[2] == "TCP" else socket.SOCK_DGRAM
                socks[key] = socket.socket(socket.AF_INET, kind)
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = {k: pool.submit(_probe, s, k[2], w.pods[k[1]]["ip"], k[3]) for k, s in socks.items()}
        return {k: f.result() for k, f in futures.items()}


def truth(w: World, policies: list[dict[str, Any]]) -> dict[tuple[int, int, str, int], bool]:
    return {
        (i, j, proto, port): oracle(policies, src, dst, proto, port, w.ns_labels)
        for i, src in enumerate(w.pods)
        for j, dst in enumerate(w.pods)
        for proto, port in PROBES
    }


def check(w: World, policies: list[dict[str, Any]]) -> None:
    """The probes against the truth table; a mismatch gets one more probe."""
    want = truth(w, policies)
    got = probe_all(w)
    wrong = [k for k in want if got[k] != want[k]]
    if wrong:
        again = probe_all(w, wrong)
        wrong = [k for k in wrong if again[k] != want[k]]
    lines = [
        f"{w.pods[i]['host']} -> {w.pods[j]['host']} {proto}/{port}: kernel "
        f"{'allows' if not want[(i, j, proto, port)] else 'denies'}, truth "
        f"{'allows' if want[(i, j, proto, port)] else 'denies'}"
        for i, j, proto, port in wrong
    ]
    assert not wrong, f"{len(wrong)} of {len(want)} probes differ:\n" + "\n".join(lines[:30])


# ---- changing the cluster -------------------------------------------------------------------------


def _covered(w: World, kind: str, since: float) -> bool:
    for node in ("node1", "node2"):
        status = cl.agent_request(w.topo.name, node, {"op": "status"})
        covered = (status.get("policy") or {}).get("covered") or {}
        if float(covered.get(kind, 0)) < since:
            return False
    return True


def enforced(w: World, kind: str, since: float) -> None:
    """Until every node's table includes the watch events of ``kind`` from ``since`` on."""
    wait_for(lambda: _covered(w, kind, since), f"both nodes to enforce the {kind} change", 20)


def apply(w: World, policies: list[dict[str, Any]]) -> None:
    """The cluster's policies become exactly ``policies``."""
    from lightkube import codecs
    from lightkube.resources.networking_v1 import NetworkPolicy

    client = _kube()(kubeapi.kubeconfig_path(w.topo.name))
    since = time.time()
    try:
        for ns in ("x", "y", "z"):
            for old in client.list(NetworkPolicy, namespace=ns):
                client.delete(NetworkPolicy, old.metadata.name, namespace=ns)
        for doc in policies:
            client.create(codecs.from_dict(doc))
    finally:
        client.close()
    enforced(w, "networkpolicies", since)


@pytest.mark.parametrize("case", sorted(UPSTREAM))
def test_upstream_case_matches_the_truth_table(world: World, case: str) -> None:
    apply(world, UPSTREAM[case])
    check(world, UPSTREAM[case])


def test_no_policy_lets_everything_through_and_removes_the_table(world: World) -> None:
    apply(world, [])
    check(world, [])
    for node in ("node1", "node2"):
        out = subprocess.run(
            ["ip", "netns", "exec", st.ns_name(world.topo.name, node), "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "podnet_policy" not in out  # nothing is looked up for any packet


def test_label_change_of_a_pod_and_of_a_namespace_is_enforced(world: World) -> None:
    from lightkube.resources.core_v1 import Namespace, Pod

    policies = [
        pol(
            "from-b",
            {
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "blue"}},
                                "podSelector": {"matchLabels": {"pod": "b"}},
                            }
                        ]
                    }
                ],
            },
        )
    ]
    apply(world, policies)
    check(world, policies)
    client = _kube()(kubeapi.kubeconfig_path(world.topo.name))
    try:
        since = time.time()
        client.patch(Namespace, "y", {"metadata": {"labels": {"team": "blue"}}})
        world.ns_labels["y"] = {**world.ns_labels["y"], "team": "blue"}
        enforced(world, "namespaces", since)
        check(world, policies)  # y/b may now reach x/a
        since = time.time()
        client.patch(Pod, "y-c", {"metadata": {"labels": {"pod": "b"}}}, namespace="y")
        yc = next(p for p in world.pods if p["host"] == "y-c")
        yc["labels"] = {"pod": "b"}
        enforced(world, "pods", since)
        check(world, policies)  # and so may y-c, relabelled pod=b
    finally:
        client.patch(Namespace, "y", {"metadata": {"labels": {"team": None}}})
        client.patch(Pod, "y-c", {"metadata": {"labels": {"pod": "c"}}}, namespace="y")
        world.ns_labels["y"] = {"ns": "y"}
        next(p for p in world.pods if p["host"] == "y-c")["labels"] = {"pod": "c"}
        client.close()


def test_a_pod_made_after_the_policy_is_isolated_from_its_first_packet(world: World) -> None:
    policies = UPSTREAM["default-deny-ingress"]
    apply(world, policies)
    state = st.LabState.load(world.topo.name)
    assert state is not None
    from podnet.lab.topomodel import Pod as LabPod

    late = LabPod("x-late", "node2", labels={"pod": "late"}, namespace="x")
    assert cl.ensure_pod(world.topo, state, late) == 1
    try:
        ip = st.LabState.load(world.topo.name).info["podIPs"]["x-late"]["ips"][0]  # type: ignore[union-attr]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", st.ns_name(world.topo.name, "x-late"), sys.executable, str(SERVER), "80"],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            src = next(i for i, p in enumerate(world.pods) if p["host"] == "y-a")
            with netns.entered(st.ns_name(world.topo.name, world.pods[src]["host"])):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            assert not _probe(sock, "TCP", ip, 80)  # no wait: the CNI ADD applied the table
        finally:
            proc.kill()
            proc.wait()
    finally:
        cl.run_cni(world.topo.name, late, "DEL")


def test_a_denied_packet_is_a_drop_event_naming_the_policy(world: World) -> None:
    apply(world, UPSTREAM["default-deny-ingress"])
    xa = next(p for p in world.pods if p["host"] == "x-a")
    ya = next(i for i, p in enumerate(world.pods) if p["host"] == "y-a")
    i = next(i for i, p in enumerate(world.pods) if p["host"] == "x-a")
    since = time.time()
    assert probe_all(world, [(ya, i, "TCP", 80)]) == {(ya, i, "TCP", 80): False}
    res = subprocess.run(
        [PODNET, "drops", "--lab", world.topo.name, "-o", "json"], capture_output=True, text=True, timeout=60
    )
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    mine = [e for e in events if e.get("dst") == xa["ip"] and e.get("dport") == 80 and e["time"] >= since]
    assert mine and mine[-1]["reason"] == "policy-denied-ingress", events[-3:]
    assert mine[-1]["policies"] == ["x/deny"] and mine[-1]["direction"] == "ingress"
    assert ipaddress.ip_address(mine[-1]["src"]) == ipaddress.ip_address(world.pods[ya]["ip"])
