"""ipam.mode eni in the lab's VPC (issue 15): pods take ENI addresses that the VPC routes, with no
encapsulation and no SNAT inside the VPC; each pod's traffic leaves through the ENI that owns its
address (the VPC drops anything else); security groups filter; the operator keeps preAllocate
spare addresses within the instance type's limits, gives excess back, and survives kill -9."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import permutations
from pathlib import Path
from typing import Any

import pytest
from labhelpers import PODNET, assert_all_pods_reach_each_other, capture, pod_ips, podnet_json, sh, wait_for

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.cloud import calls_path, ec2_call
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Pod, Topology, load_topology
from podnet.lab.vpc import port_name
from podnet.verify.probe import tcp_probe

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

RAWSEND = str(Path(__file__).with_name("rawsend.py"))


def _status(topo: Topology, node: str) -> dict[str, Any]:
    return cl.agent_request(topo.name, node, {"op": "status"})["eni"]  # type: ignore[no-any-return]


def _port(topo: Topology, node: str, device: str) -> str:
    eni = next(e for e in _status(topo, node)["enis"] if e["device"] == device)
    return port_name(eni["id"])


def _counter(topo: Topology, comment: str) -> int:
    """Packets counted by the VPC router's rule whose comment starts with ``comment``."""
    table = json.loads(sh(topo, "vpc", "nft", "-j", "list", "table", "ip", "vpc"))
    total = 0
    for item in table["nftables"]:
        rule = item.get("rule")
        if rule and str(rule.get("comment", "")).startswith(comment):
            total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return total


def _calls(topo: Topology) -> list[dict[str, Any]]:
    path = calls_path(topo.name)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _ping(topo: Topology, host: str, dst: str, *extra: str) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, host), "ping", "-c", "2", "-W", "1", *extra, dst],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return res.returncode == 0


def test_eni_pods_are_vpc_addresses_routed_natively_through_their_own_eni(
    lab_up: Callable[..., Topology],
) -> None:
    topo = lab_up(load_topology("eni"))
    ips = pod_ips(topo)
    assert ips["pod1"].startswith("10.0.8.") and ips["pod2"].startswith("10.0.9.")  # each node's pod subnet
    assert_all_pods_reach_each_other(topo)  # pod source addresses arrive unchanged
    # the datapath: Cilium's rules and the ENI's table, the ENI up at 9001
    rules = sh(topo, "node1", "ip", "rule")
    assert f"20:\tfrom all to {ips['pod1']} lookup main proto 201" in rules
    assert f"111:\tfrom {ips['pod1']} lookup 11 proto 201" in rules
    assert sh(topo, "node1", "ip", "route", "show", "table", "11").splitlines() == [
        "default via 10.0.8.1 dev eth1 proto 201 ",
        "10.0.8.1 dev eth1 proto 201 scope link ",
    ]
    assert "mtu 9001" in sh(topo, "node1", "ip", "link", "show", "eth1")
    # no encapsulation, no SNAT: the VPC router forwards the pod's own address to node2's ENI
    into_node2 = _port(topo, "node2", "eth1")
    tunnels = "udp port 8472 or udp port 6081 or udp port 4789"
    with (
        capture(topo, "vpc", "any", tunnels) as tunnelled,
        capture(topo, "vpc", into_node2, f"icmp and host {ips['pod2']}") as seen,
    ):
        assert _ping(topo, "pod1", ips["pod2"])
    assert any(f"{ips['pod1']} > {ips['pod2']}: ICMP echo request" in line for line in seen), seen
    assert not any("UDP" in line for line in tunnelled), tunnelled
    # jumbo frames end to end: 8972 bytes of ICMP payload + 28 = 9000 < 9001, don't fragment
    assert _ping(topo, "pod1", ips["pod2"], "-M", "do", "-s", "8972")
    # pod -> world leaves through the pod's own ENI; the internet gateway NATs it
    out_of_eth1 = _port(topo, "node1", "eth1")
    with (
        capture(topo, "vpc", out_of_eth1, "icmp and host 203.0.113.10") as egress,
        capture(topo, "world", "eth0", "icmp") as at_world,
    ):
        assert _ping(topo, "pod1", "203.0.113.10")
    assert any(f"{ips['pod1']} > 203.0.113.10" in line for line in egress), egress
    assert any("203.0.113.1 > 203.0.113.10" in line for line in at_world), at_world
    # a packet forced out of another ENI (eth0 does not own the pod's address) is dropped by the VPC
    check = "source check"
    before = _counter(topo, check)
    node2 = ["ip", "netns", "exec", st.ns_name(topo.name, "node2")]
    listener = subprocess.Popen([*node2, sys.executable, RAWSEND, "listen", "10.0.2.10", "9999", "3"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.5)
    sh(topo, "node1", sys.executable, RAWSEND, "udp", ips["pod1"], "10.0.2.10", "9999", "5")
    out, _ = listener.communicate(timeout=30)
    assert out.strip() == "0", f"node2 received forged packets: {out}"
    assert _counter(topo, check) - before >= 5
    # security groups: the pods' group admits 5201 from the VPC, not 8080 from a node's address
    node1 = st.ns_name(topo.name, "node1")
    assert tcp_probe(node1, st.ns_name(topo.name, "pod2"), ips["pod2"], port=5201).ok
    blocked = _counter(topo, "security groups of")
    assert not tcp_probe(node1, st.ns_name(topo.name, "pod2"), ips["pod2"], port=8080, timeout=1.0).ok
    assert _counter(topo, "security groups of") > blocked
    # what podnet status shows: the instance, its limits, the ENIs
    status = _status(topo, "node1")
    assert status["instance"]["instanceType"] == "m5.large" and status["limits"] == {
        "adapters": 3,
        "ipv4PerAdapter": 10,
    }
    assert [e["device"] for e in status["enis"]][:2] == ["eth0", "eth1"] and not status["errors"]
    argv = [PODNET, "status", "--lab", topo.name, "--node", "node1"]
    table = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    assert "m5.large in us-east-1a: at most 3 ENIs x 10 addresses" in table and "eth1:" in table
    _policy_holds_on_eni(topo, ips)


def _policy(topo: Topology, verb: str, doc: dict[str, Any] | None = None, *names: str) -> int:
    """``podnet policy apply -f - | delete NAME``; the etcd revision that includes the change."""
    res = subprocess.run(
        [PODNET, "policy", verb, "--lab", topo.name, *(["-f", "-"] if doc else []), *names],
        input=json.dumps(doc) if doc else None, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return int(res.stdout.splitlines()[-1].split()[1].rstrip(":"))


def _policy_holds_on_eni(topo: Topology, ips: dict[str, str]) -> None:
    """NetworkPolicy on ENI addresses (datastore etcd): a default deny for ingress in namespace
    default refuses pod1 -> pod2, a policy allowing 5201 lets it in again, deleting both restores it."""

    def enforced(revision: int) -> None:
        def seen() -> bool:
            policy = cl.agent_request(topo.name, "node2", {"op": "status"}).get("policy") or {}
            return int((policy.get("covered") or {}).get("etcd", 0)) >= revision

        wait_for(seen, f"node2 to enforce etcd revision {revision}", 20)

    pod1, pod2 = st.ns_name(topo.name, "pod1"), st.ns_name(topo.name, "pod2")
    meta = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    deny = {**meta, "metadata": {"namespace": "default", "name": "deny"}, "spec": {"podSelector": {}}}
    allow = {
        **meta,
        "metadata": {"namespace": "default", "name": "allow-5201"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 5201}]}]},
    }
    enforced(_policy(topo, "apply", deny))
    assert not tcp_probe(pod1, pod2, ips["pod2"], port=5201, timeout=1.0).ok
    enforced(_policy(topo, "apply", allow))
    assert tcp_probe(pod1, pod2, ips["pod2"], port=5201).ok
    assert not tcp_probe(pod1, pod2, ips["pod2"], port=5202, timeout=1.0).ok
    enforced(_policy(topo, "delete", None, "default/deny", "default/allow-5201"))
    assert tcp_probe(pod1, pod2, ips["pod2"], port=5202).ok


def _one_node(release_delay: str = "3s", datastore: str = "etcd") -> Topology:
    topo = apply_overrides(
        load_topology("eni"),
        [
            f"eni.excessIPReleaseDelay={release_delay}",
            "eni.awsReleaseExcessIPs=true",
            f"datastore={datastore}",
        ],
    )
    return dataclasses.replace(topo, pods=tuple(p for p in topo.pods if p.node == "node1"))


def _eni_state(topo: Topology, node: str = "node1") -> tuple[int, int, str]:
    """(available, used, limitReached) of ``node`` as the operator last published it."""
    status = _status(topo, node)
    available = sum(len(e["addresses"]) for e in status["enis"] if e["forPods"]) - len(status["release"])
    used = sum(1 for e in status["enis"] if e["forPods"] for owner in e["addresses"].values() if owner)
    return available, used, status["limitReached"]


@pytest.mark.parametrize("datastore", ["etcd", "kubernetes"])
def test_eni_pre_allocation_limits_and_release(lab_up: Callable[..., Topology], datastore: str) -> None:
    """Also on datastore: kubernetes, where the ENI documents are PodnetNode's spec.eni,
    status.eni and status.ipam.eni (as CiliumNode's), the release handshake included."""
    topo = lab_up(_one_node(datastore=datastore))
    state = st.LabState.load(topo.name)
    assert state is not None

    def settled() -> bool:
        available, used, limit = _eni_state(topo)
        return bool(limit) or available - used >= 8

    wait_for(settled, "node1's spare addresses", timeout=20)
    added: list[Pod] = []
    failure = ""
    for k in range(20):  # m5.large, firstInterfaceIndex 1: 2 ENIs x 9 = 18 addresses, 1 is the router's
        pod = Pod(f"extra{k}", "node1")
        try:
            cl.ensure_pod(topo, state, pod)
        except cl.ClusterError as exc:
            failure = str(exc)
            break
        added.append(pod)
        wait_for(settled, f"spare addresses after pod {k + 1}", timeout=20)
    assert len(added) == 16, f"{len(added)} pods fit (pod1 + 16 + the router = 18): {failure}"
    assert "code 100" in failure and "at most 3 ENIs of 10 addresses" in failure, failure
    # diagnose names the pod that never started, its node and the exhausted ENI capacity
    verdict = podnet_json("diagnose", "--lab", topo.name, "pod1", f"extra{len(added)}", "-o", "json", code=1)
    assert verdict["verdict"]["host"] == "node1" and "never started" in verdict["verdict"]["reason"], verdict
    assert "code 100" in verdict["verdict"]["reason"], verdict
    calls = _calls(topo)
    actions = [c["action"] for c in calls if not c["action"].startswith("Describe")]
    second = actions.index("CreateNetworkInterface", actions.index("CreateNetworkInterface") + 1)
    assert actions[second : second + 3] == [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "AssignPrivateIpAddresses",
    ]
    assert not [c for c in calls if c["status"] >= 400], "the operator made a call EC2 refused"
    instance = _status(topo, "node1")["instance"]["instanceID"]
    mine = [{"Name": "attachment.instance-id", "Values": [instance]}]
    enis = ec2_call(topo.name, "DescribeNetworkInterfaces", Filters=mine)["NetworkInterfaces"]
    assert len(enis) == 3 and all(len(e["PrivateIpAddresses"]) <= 10 for e in enis)
    # the pods go: after the delay the operator marks, the agent agrees, EC2 unassigns
    for pod in added:
        assert cl.run_cni(topo.name, pod, "DEL")[0] == 0
    wait_for(
        lambda: any(c["action"] == "UnassignPrivateIpAddresses" for c in _calls(topo)),
        "a release",
        timeout=30,
    )
    wait_for(lambda: _eni_state(topo)[0] - _eni_state(topo)[1] <= 8, "the excess to go", timeout=40)
    available, used, _ = _eni_state(topo)
    assert available - used == 8, (available, used)
    assert _ping(topo, "pod1", "10.0.1.254")  # pod1 kept working through it all
    if datastore == "kubernetes":
        pnn = _podnetnode(topo, "node1")
        assert pnn["spec"]["eni"]["preAllocate"] == 8 and pnn["status"]["eni"]["instanceID"] == instance
        used_doc = pnn["status"]["ipam"]["eni"]["used"]
        assert sorted(used_doc.values()) == ["default/pod1", "router"], used_doc  # the extras are gone


def _podnetnode(topo: Topology, node: str) -> dict[str, Any]:
    from podnet.kube.client import connect
    from podnet.kube.resources import PodnetNode
    from podnet.lab import kubeapi

    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        return dict(client.get(PodnetNode, node).to_dict())
    finally:
        client.close()


def test_eni_operator_and_agent_kill_9_lose_nothing(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(load_topology("eni"))
    state = st.LabState.load(topo.name)
    assert state is not None
    ips = pod_ips(topo)
    for node in ("node1", "node2"):  # the operator has done what lab up's pods asked of it
        wait_for(lambda n=node: _eni_state(topo, n)[0] - _eni_state(topo, n)[1] >= 8, f"{node} settled")
    before = {n: _status(topo, n)["enis"] for n in ("node1", "node2")}
    created = sum(1 for c in _calls(topo) if c["action"] == "CreateNetworkInterface")
    operator = state.process("operator")
    assert operator is not None
    os.kill(operator.pid, signal.SIGKILL)
    wait_for(lambda: not operator.running(), "the operator to die")
    assert_all_pods_reach_each_other(topo)
    from podnet.lab.run import bring_up

    assert bring_up(topo).changes >= 1
    time.sleep(3)  # a few rounds of the new operator
    assert sum(1 for c in _calls(topo) if c["action"] == "CreateNetworkInterface") == created
    assert {n: _status(topo, n)["enis"] for n in ("node1", "node2")} == before
    late = Pod("late", "node2")
    cl.ensure_pod(topo, state, late)
    assert pod_ips(topo)["late"].startswith("10.0.9.")
    # the agent: pods keep talking while it is dead; back, it keeps the router IP and the rules
    router = cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["routerIPs"]
    rules = sh(topo, "node1", "ip", "rule")
    agent = state.process("agent-node1")
    assert agent is not None
    os.kill(agent.pid, signal.SIGKILL)
    wait_for(lambda: not agent.running(), "agent-node1 to die")
    assert tcp_probe(st.ns_name(topo.name, "pod2"), st.ns_name(topo.name, "pod1"), ips["pod1"]).ok
    assert bring_up(topo).changes >= 1
    assert cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["routerIPs"] == router
    assert sh(topo, "node1", "ip", "rule") == rules
    ips = pod_ips(topo)
    for a, b in permutations(("pod1", "pod2", "late"), 2):
        assert tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b]).ok, f"{a} -> {b}"


def test_eni_with_masquerading_leaves_the_vpc_through_eth0(lab_up: Callable[..., Topology]) -> None:
    """Masquerading on: traffic to the world takes the main table out of eth0 with the node's
    address; traffic inside the VPC keeps the pod's address on its own ENI; the VPC's source check
    never fires (the "wrong ENI" failure would show as drops there)."""
    topo = lab_up(apply_overrides(load_topology("eni"), ["enableIPv4Masquerade=true"]))
    ips = pod_ips(topo)
    assert re.search(
        rf"111:\tfrom {re.escape(ips['pod1'])} to 10\.0\.0\.0/16 lookup 11", sh(topo, "node1", "ip", "rule")
    )
    with capture(topo, "vpc", _port(topo, "node1", "eth0"), "icmp and host 203.0.113.10") as via_eth0:
        assert _ping(topo, "pod1", "203.0.113.10")
    assert any("10.0.1.10 > 203.0.113.10" in line for line in via_eth0), via_eth0
    assert_all_pods_reach_each_other(topo)
    assert _counter(topo, "source check") == 0
