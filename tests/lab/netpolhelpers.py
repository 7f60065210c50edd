"""The NetworkPolicy tier's world and probes (issue 28), shared by the lab-pod tier
(netpolsuite.py, run by test_netpol_*.py) and the real-pod tier (test_real_netpol.py): namespaces
x, y, z with pods a, b, c, each serving TCP and UDP on 80 and 81 (netpolserver.py in the pod's
network namespace); every pod probes every pod on every port from its own namespace, all at once,
and the result is compared with the truth table the independent oracle (tests/policyoracle.py)
computes. A mismatch is probed once more (no other retry budget). Enforcement is waited for by
asking each agent which resourceVersion (or etcd revision) its table includes, not by sleeping."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

from labhelpers import wait_for
from policycases import pol
from policyoracle import allowed as oracle

from podnet.lab import cluster as cl
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.topology import Topology
from podnet.util import netns

PROBES = [(proto, port) for proto in ("TCP", "UDP") for port in (80, 81)]
TIMEOUT = 1.0  # seconds a denied probe waits (dropped packets get no answer)
# UDP probes' source ports, each used once per pass through the range: conntrack keeps an
# answered UDP exchange for 30 s (120 s once it is a stream), and a new probe that the kernel gave
# the same ephemeral port would be that exchange's next packet, accepted as established even when
# the policy now denies it (Kubernetes lets established flows finish; a probe is a new flow)
UDP_SOURCE_PORTS = itertools.cycle(range(20000, 32000))
SERVER = Path(__file__).with_name("netpolserver.py")


@dataclasses.dataclass
class World:
    topo: Topology
    pods: list[dict[str, Any]]  # {"host", "namespace", "name", "labels", "ip", "namedPorts"}
    ns_labels: dict[str, dict[str, str]]
    servers: list[subprocess.Popen[bytes]]
    family: int  # the pods' addresses probed: 4, or 6 (dual stack)
    kind: str = ""  # the datapath's name (DATAPATHS)

    @property
    def etcd(self) -> bool:
        """The policies live in etcd (``podnet policy apply``), not in an API server."""
        return self.topo.cluster.get("datastore", "etcd") != "kubernetes"

    def ip(self, host: str) -> str:
        return str(next(p["ip"] for p in self.pods if p["host"] == host))


def kube_connect() -> Any:
    from podnet.kube.client import connect

    return connect


# ---- probing ----------------------------------------------------------------------------------


def probe(sock: socket.socket, proto: str, ip: str, port: int) -> bool:
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


def _bind_fresh_port(sock: socket.socket) -> None:
    """A source port no recent UDP probe of this process used (the kernel's ephemeral range is
    32768-60999, so these never meet one the kernel picked)."""
    for _ in range(16):
        try:
            sock.bind(("", next(UDP_SOURCE_PORTS)))
            return
        except OSError:  # in use in that pod's namespace: the next one
            continue


def probe_all(
    w: World, pairs: list[tuple[int, int, str, int]] | None = None
) -> dict[tuple[int, int, str, int], bool]:
    """Every (source pod, destination pod, protocol, port), all at once (a table costs one
    ``TIMEOUT``, however many probes are denied); sockets are made in the source pod's namespace."""
    wanted = pairs or [
        (i, j, proto, port) for i in range(len(w.pods)) for j in range(len(w.pods)) for proto, port in PROBES
    ]
    socks = {}
    for i in sorted({i for i, *_ in wanted}):
        with netns.entered(st.ns_name(w.topo.name, w.pods[i]["host"])):
            for key in (k for k in wanted if k[0] == i):
                kind = socket.SOCK_STREAM if key[2] == "TCP" else socket.SOCK_DGRAM
                socks[key] = socket.socket(socket.AF_INET6 if w.family == 6 else socket.AF_INET, kind)
                if kind == socket.SOCK_DGRAM:
                    _bind_fresh_port(socks[key])
    with ThreadPoolExecutor(max_workers=max(1, len(socks))) as pool:
        futures = {k: pool.submit(probe, s, k[2], w.pods[k[1]]["ip"], k[3]) for k, s in socks.items()}
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


NODES = ("node1", "node2")


def _covered(w: World, kind: str, version: int, nodes: tuple[str, ...] = NODES) -> bool:
    for node in nodes:
        status = cl.agent_request(w.topo.name, node, {"op": "status"})
        covered = (status.get("policy") or {}).get("covered") or {}
        if int(covered.get(kind, 0)) < version:
            return False
    return True


def enforced(w: World, kind: str, version: int, nodes: tuple[str, ...] = NODES) -> None:
    """Until ``nodes``' tables include the objects of ``kind`` up to resourceVersion ``version``
    (the API server's versions grow with every write: exact, no sleeping)."""
    wait_for(lambda: _covered(w, kind, version, nodes), f"{nodes} to enforce {kind} at version {version}", 20)


def rv(obj: Any) -> int:
    return int(obj.metadata.resourceVersion)


def apply(w: World, policies: list[dict[str, Any]], nodes: tuple[str, ...] = NODES) -> None:
    """The cluster's policies become exactly ``policies``; waits until ``nodes`` enforce them."""
    if w.etcd:
        enforced(w, "etcd", etcd_apply(w, policies), nodes)
        return
    from lightkube import codecs
    from lightkube.resources.networking_v1 import NetworkPolicy

    client = kube_connect()(kubeapi.kubeconfig_path(w.topo.name))
    needed = 0
    try:
        for ns in ("x", "y", "z"):
            for old in client.list(NetworkPolicy, namespace=ns):
                client.delete(NetworkPolicy, old.metadata.name, namespace=ns)
                needed = max(needed, rv(old) + 1)  # its deletion is a later version
        for doc in policies:
            needed = max(needed, rv(client.create(codecs.from_dict(doc))))
    finally:
        client.close()
    enforced(w, "networkpolicies", needed, nodes)


def etcd_apply(w: World, policies: list[dict[str, Any]]) -> int:
    """As a user does it on datastore etcd: ``podnet policy delete`` of what is there, then
    ``podnet policy apply -f`` of the new file; returns the revision that includes both."""
    listed = podnet_policy(w, "list").splitlines()
    names = [row.split()[1] for row in listed if row.startswith("networkpolicy ")]
    revision = int(podnet_policy(w, "delete", *names).splitlines()[-1].split()[1]) if names else 0
    if policies:
        text = "\n---\n".join(json.dumps(p) for p in policies)
        out = podnet_policy(w, "apply", "-f", "-", stdin=text)
        revision = int(out.splitlines()[-1].split()[1].rstrip(":"))
    return revision


def podnet_policy(w: World, verb: str, *args: str, stdin: str | None = None) -> str:
    """``podnet policy VERB --lab LAB ARGS`` through the command's own entry point
    (``podnet.cli.main``: its parser, its command, its exit status), in this process: a new
    ``podnet`` process spends ~0.8 s importing every command's parser before it reads etcd, and
    the etcd world runs three of these per policy change."""
    from podnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(["policy", verb, "--lab", w.topo.name, *args])
    assert code == 0, err.getvalue()
    return out.getvalue()


def lab_cases(w: World) -> dict[str, list[dict[str, Any]]]:
    """Cases whose ipBlocks are the lab's own addresses (the upstream ones name the unit
    world's): the pod CIDRs minus one pod, and egress to one pod only."""
    pool = "10.244.0.0/16" if w.family == 4 else "fd00:10:244::/56"
    host = 32 if w.family == 4 else 128
    a = {"matchLabels": {"pod": "a"}}
    block = {"ipBlock": {"cidr": pool, "except": [f"{w.ip('y-a')}/{host}"]}}
    to_zb = {"to": [{"ipBlock": {"cidr": f"{w.ip('z-b')}/{host}"}}], "ports": [{"port": 80}]}
    return {
        "lab-ip-block-except-y-a": [pol("block", {"podSelector": a, "ingress": [{"from": [block]}]})],
        "lab-egress-ip-block-to-z-b": [
            pol("out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [to_zb]})
        ],
    }


def start_servers(lab: str, hosts: list[str]) -> list[subprocess.Popen[bytes]]:
    """netpolserver.py on 80 and 81 in each host's network namespace, each ready when this returns
    (the caller kills them by PID)."""
    servers = []
    try:
        for host in hosts:
            argv = ["ip", "netns", "exec", st.ns_name(lab, host), sys.executable, str(SERVER), "80", "81"]
            servers.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for proc in servers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    for proc in servers:
        proc.kill()
        proc.wait()
