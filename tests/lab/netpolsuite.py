"""NetworkPolicy conformance (issue 28), modelled on the upstream e2e netpol suite: namespaces x,
y, z with pods a, b, c (examples/netpol.yaml, spread over two nodes), each serving TCP and UDP on
80 and 81; after each policy change every pod probes every pod on every port, and the result must
be the truth table the independent oracle (tests/policyoracle.py) computes from the objects. A
mismatch is probed once more (no other retry budget). The lab waits for enforcement by asking
each agent which resourceVersion its table includes, not by sleeping.

The tests of every datapath world; each world is a file of its own (test_netpol_<world>.py, one
module-scoped lab each), so that the suite's workers run the four worlds side by side. A file
takes ``world = world_fixture(kind)`` and the tests that hold in its world."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from labhelpers import PODNET, restart_agent, wait_for
from netpolhelpers import (
    SERVER,
    World,
    apply,
    check,
    enforced,
    kube_connect,
    lab_cases,
    podnet_policy,
    probe,
    probe_all,
    rv,
    start_servers,
    stop_servers,
    truth,
)
from policycases import UPSTREAM, pol

from podnet.lab import cluster as cl
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns

# the datapaths the tier runs in: the topology (examples/), its overrides, and the family probed.
# netpol-bgp keeps its policies in etcd (podnet policy apply), netpol in the API server.
DATAPATHS = {
    "tunnel": ("netpol", ["bpf.hostLegacyRouting=true"], 4),  # Legacy: the kernel routes
    "native-bpf-host-routing": (
        "netpol",
        ["routingMode=native", "autoDirectNodeRoutes=true", "bpf.hostLegacyRouting=false"],
        4,
    ),
    "dual-stack-ipv6": ("netpol", ["ipv6.enabled=true", "bpf.hostLegacyRouting=false"], 6),
    "native-bgp-etcd": ("netpol-bgp", ["bpf.hostLegacyRouting=true"], 4),  # Legacy: the kernel routes
}


def world_fixture(kind: str) -> Callable[[], Iterator[World]]:
    """The module-scoped ``world`` fixture of datapath ``kind``: its lab up, every pod serving."""

    @pytest.fixture(scope="module")
    def world() -> Iterator[World]:
        yield from _world(kind)

    return world


def _world(kind: str) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    source, overrides, family = DATAPATHS[kind]
    name = f"t{secrets.token_hex(2)}-netpol"[:16]
    topo = apply_overrides(load_topology(source), overrides)
    topo = dataclasses.replace(topo, name=name)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bring_up(topo)
        state = st.LabState.load(topo.name)
        assert state is not None
        pods = []
        for p in topo.pods:
            ip = next(
                a for a in state.info["podIPs"][p.name]["ips"] if ipaddress.ip_address(a).version == family
            )
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
        servers += start_servers(topo.name, [p.name for p in topo.pods])
        ns_labels = {n.name: dict(n.labels) for n in topo.namespaces}
        yield World(topo, pods, ns_labels, servers, family, kind)
    finally:
        stop_servers(servers)
        bring_down(topo.name)


class NetpolTests:
    """The tests every world runs."""

    @pytest.mark.parametrize("case", sorted(UPSTREAM))
    def test_upstream_case_matches_the_truth_table(self, world: World, case: str) -> None:
        apply(world, UPSTREAM[case])
        check(world, UPSTREAM[case])

    @pytest.mark.parametrize("case", ["lab-ip-block-except-y-a", "lab-egress-ip-block-to-z-b"])
    def test_ip_block_case_matches_the_truth_table(self, world: World, case: str) -> None:
        policies = lab_cases(world)[case]
        apply(world, policies)
        check(world, policies)

    def test_no_policy_lets_everything_through_and_removes_the_table(self, world: World) -> None:
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

    def test_label_change_of_a_pod_and_of_a_namespace_is_enforced(self, world: World) -> None:
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
        if world.etcd:
            _etcd_namespace_label_change(world, policies)
            return
        client = kube_connect()(kubeapi.kubeconfig_path(world.topo.name))
        try:
            patched = client.patch(Namespace, "y", {"metadata": {"labels": {"team": "blue"}}})
            world.ns_labels["y"] = {**world.ns_labels["y"], "team": "blue"}
            enforced(world, "namespaces", rv(patched))
            check(world, policies)  # y/b may now reach x/a
            patched = client.patch(Pod, "y-c", {"metadata": {"labels": {"pod": "b"}}}, namespace="y")
            yc = next(p for p in world.pods if p["host"] == "y-c")
            yc["labels"] = {"pod": "b"}
            enforced(world, "pods", rv(patched))
            check(world, policies)  # and so may y-c, relabelled pod=b
        finally:
            done = [client.patch(Namespace, "y", {"metadata": {"labels": {"team": None}}})]
            done.append(client.patch(Pod, "y-c", {"metadata": {"labels": {"pod": "c"}}}, namespace="y"))
            enforced(world, "namespaces", rv(done[0]))
            enforced(world, "pods", rv(done[1]))
            world.ns_labels["y"] = {"ns": "y"}
            next(p for p in world.pods if p["host"] == "y-c")["labels"] = {"pod": "c"}
            client.close()

    def test_a_pod_made_after_the_policy_is_isolated_from_its_first_packet(self, world: World) -> None:
        policies = UPSTREAM["default-deny-ingress"]
        apply(world, policies)
        state = st.LabState.load(world.topo.name)
        assert state is not None
        from podnet.lab.topomodel import Pod as LabPod

        late = LabPod("x-late", "node2", labels={"pod": "late"}, namespace="x")
        assert cl.ensure_pod(world.topo, state, late) == 1
        try:
            ips = st.LabState.load(world.topo.name).info["podIPs"]["x-late"]["ips"]  # type: ignore[union-attr]
            ip = next(a for a in ips if ipaddress.ip_address(a).version == world.family)
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    st.ns_name(world.topo.name, "x-late"),
                    sys.executable,
                    str(SERVER),
                    "80",
                ],
                stdout=subprocess.PIPE,
            )
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
                src = next(i for i, p in enumerate(world.pods) if p["host"] == "y-a")
                with netns.entered(st.ns_name(world.topo.name, world.pods[src]["host"])):
                    sock = socket.socket(
                        socket.AF_INET6 if world.family == 6 else socket.AF_INET, socket.SOCK_STREAM
                    )
                assert not probe(sock, "TCP", ip, 80)  # no wait: the CNI ADD applied the table
            finally:
                proc.kill()
                proc.wait()
        finally:
            cl.run_cni(world.topo.name, late, "DEL")

    def test_a_denied_packet_is_a_drop_event_naming_the_policy(self, world: World) -> None:
        apply(world, UPSTREAM["default-deny-ingress"])
        xa = next(p for p in world.pods if p["host"] == "x-a")
        ya = next(i for i, p in enumerate(world.pods) if p["host"] == "y-a")
        i = next(i for i, p in enumerate(world.pods) if p["host"] == "x-a")
        since = time.time()
        assert probe_all(world, [(ya, i, "TCP", 80)]) == {(ya, i, "TCP", 80): False}
        res = subprocess.run(
            [PODNET, "drops", "--lab", world.topo.name, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        mine = [e for e in events if e.get("dst") == xa["ip"] and e.get("dport") == 80 and e["time"] >= since]
        assert mine and mine[-1]["reason"] == "policy-denied-ingress", events[-3:]
        assert mine[-1]["policies"] == ["x/deny"] and mine[-1]["direction"] == "ingress"
        assert ipaddress.ip_address(mine[-1]["src"]) == ipaddress.ip_address(world.pods[ya]["ip"])

    def test_agent_killed_9_keeps_the_policy_in_force_and_catches_up_after_restart(
        self, world: World
    ) -> None:
        """While node1's agent is dead its table holds (no window where denied traffic passes), a
        change made meanwhile is enforced by node2 at once and by node1 once its agent is back."""
        deny = UPSTREAM["default-deny-ingress"]
        apply(world, deny)
        state = st.LabState.load(world.topo.name)
        assert state is not None
        rec = state.process("agent-node1")
        assert rec is not None and rec.running()
        os.kill(rec.pid, signal.SIGKILL)
        allow_same = UPSTREAM["allow-from-same-namespace"]
        try:
            wait_for(lambda: not rec.running(), "node1's agent to die", 10)
            check(world, deny)  # nothing of the policy went with the agent
            apply(world, allow_same, nodes=("node2",))
            node1 = {i for i, p in enumerate(world.pods) if p["host"] in ("x-a", "x-c", "y-b", "z-a", "z-c")}
            deny_node1 = {k: v for k, v in truth(world, deny).items() if k[1] in node1}
            want = {**truth(world, allow_same), **deny_node1}
            got = probe_all(world)
            stricter = [k for k in want if got[k] and not want[k]]
            assert not stricter, f"denied traffic passed while node1's agent was down: {stricter[:5]}"
        finally:  # node1's agent starts again (and catches up): also when the test failed, for the next
            restart_agent(world.topo, "node1")
        apply(world, allow_same)
        check(world, allow_same)

    def test_diagnose_names_the_policy_that_drops_the_probe(self, world: World) -> None:
        apply(world, UPSTREAM["default-deny-ingress"])
        res = subprocess.run(
            [PODNET, "diagnose", "--lab", world.topo.name, "y-a", "x-a", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        verdict = json.loads(res.stdout)["verdict"]
        assert verdict["kind"] == "policy-denied" and verdict["host"] == "node1", verdict
        assert "x/deny" in verdict["reason"] and "podnet policy show" in verdict["fix"], verdict
        shown = subprocess.run(
            [PODNET, "policy", "show", "--lab", world.topo.name, "x-a", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        doc = json.loads(shown)["addresses"][0]
        assert (
            doc["ingressIsolatedBy"] == ["x/deny"] and doc["ingress"] == [] and doc["egressIsolatedBy"] == []
        )


class PodsMadeAfterThePolicy:
    """Every upstream case again with node2's pods made after the policy (the worlds tunnel and
    native-bgp-etcd take it)."""

    @pytest.mark.parametrize("case", sorted(UPSTREAM))
    def test_upstream_case_holds_for_pods_made_after_the_policy(self, world: World, case: str) -> None:
        """Order does not matter: node2's pods are deleted (CNI DEL), the policy applied, and the
        pods made again (CNI ADD, new addresses possible); the truth table is the same. Taken by the
        worlds tunnel and native-bgp-etcd."""
        state = st.LabState.load(world.topo.name)
        assert state is not None
        again = [p for p in world.topo.pods if p.node == "node2"]
        for pod in again:
            assert cl.run_cni(world.topo.name, pod, "DEL")[0] == 0
        apply(world, UPSTREAM[case])
        for pod in again:  # the pods' servers listen on the wildcard in their namespaces, which stay
            assert cl.ensure_pod(world.topo, state, pod) == 1
        ips = st.LabState.load(world.topo.name).info["podIPs"]  # type: ignore[union-attr]
        for p in world.pods:
            p["ip"] = next(
                a for a in ips[p["host"]]["ips"] if ipaddress.ip_address(a).version == world.family
            )
        _pods_seen(world)
        check(world, UPSTREAM[case])


class BpfHostRoutingTests:
    """The worlds with BPF host routing (bpf.hostLegacyRouting=false) take these."""

    def test_bpf_host_routing_leaves_only_policed_pods_to_netfilter(self, world: World) -> None:
        """With BPF host routing the program redirects pods' packets past netfilter: a pod a policy
        isolates is no endpoint of it, and its address is marked for the kernel's path. Taken by the
        worlds with BPF host routing (bpf.hostLegacyRouting=false)."""
        assert "bpf.hostLegacyRouting=false" in DATAPATHS[world.kind][1], world.kind
        apply(world, UPSTREAM["pod-and-namespace-AND"])  # isolates x/a only
        status = cl.agent_request(world.topo.name, "node1", {"op": "status"})
        assert status["hostRouting"]["mode"] == "BPF", status["hostRouting"]
        check(world, UPSTREAM["pod-and-namespace-AND"])


def _pods_seen(w: World) -> None:
    """Until every node has seen the pods' new addresses (their Pod objects, or on etcd the
    endpoints the agents published at ADD)."""
    if w.etcd:
        from podnet.lab.controlplane import lab_store
        from podnet.store.keys import ENDPOINTS_PREFIX

        with lab_store(w.topo) as store:  # the newest write of a node's pods (not the store's revision:
            kvs = store.list_prefix(ENDPOINTS_PREFIX)[0]  # heartbeats raise that, and no watch sees them)
        enforced(w, "etcd", max(kv.mod_revision for kv in kvs))
        return
    from lightkube.resources.core_v1 import Pod

    client = kube_connect()(kubeapi.kubeconfig_path(w.topo.name))
    try:
        version = max(rv(client.get(Pod, p["name"], namespace=p["namespace"])) for p in w.pods)
    finally:
        client.close()
    enforced(w, "pods", version)


def _etcd_namespace_label_change(w: World, policies: list[dict[str, Any]]) -> None:
    """On datastore etcd a namespace's labels are a Namespace document (pods' labels are the
    runtime's, fixed at ADD as in any runtime)."""

    def label(labels: dict[str, str]) -> None:
        doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y", "labels": labels}}
        out = podnet_policy(w, "apply", "-f", "-", stdin=json.dumps(doc))
        enforced(w, "etcd", int(out.splitlines()[-1].split()[1].rstrip(":")))
        w.ns_labels["y"] = labels

    try:
        label({"ns": "y", "team": "blue"})
        check(w, policies)  # y/b may now reach x/a
    finally:
        label({"ns": "y"})
    check(w, policies)
