"""NetworkPolicy's cost, in one run against the same lab without policies (issue 28).

On examples/netpol.yaml with a third node (three agents, VXLAN, the Kubernetes datastore),
pod x-b (node2) talks to pod x-a (node1). Rounds interleave 0, 100 and 1000 policies selecting
x-a (each allows a /32 of its own on port 7000; one more allows x-b), so machine noise hits every
count alike:
- new TCP connections per second, x-b -> x-a:7000 (a connect/accept/close loop for --seconds);
- the throughput of one established iperf3 stream x-b -> x-a;
- the time from a policy's create call to its enforcement on all three nodes (each agent's table
  includes the policy's resourceVersion), p50/p99 over --changes creates, with 1000 policies in
  place; then again with --sim-nodes simulated nodes on the API server (Node objects, each with
  --sim-pods Running pods in namespace x labelled pod=b, so one policy's peers resolve to all of
  them on every node; nothing is ever sent to their addresses).
Prints the figures and the ratios against 0 policies, writes bench/results/policy.json.
Goals: connections/s with 1000 policies >= 0.9 of none; stream >= 0.97; enforcement p99 <= 1 s.
Run as root after scripts/build-kube.sh.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchlib import stats, write_json
from lightkube import codecs
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.resources.networking_v1 import NetworkPolicy

from podnet.kube.client import connect
from podnet.lab import cluster as cl
from podnet.lab import kubeapi, kubelet
from podnet.lab import state as st
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.util import netns

PORT = 7000
IPERF = 5201  # iperf3's control and data connections
SRC, DST = "x-b", "x-a"
COUNTS = (0, 100, 1000)
NODES = ("node1", "node2", "node3")
SIM_PODS = ipaddress.ip_network("10.100.0.0/16")  # simulated pods' addresses (no route, no traffic)


def policy(i: int, src_ip: str | None = None) -> dict[str, Any]:
    peer = (
        {"podSelector": {"matchLabels": {"pod": "b"}}}
        if src_ip is None
        else {"ipBlock": {"cidr": f"10.99.{i // 250}.{i % 250 + 1}/32"}}
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": f"bench-{i}"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [peer], "ports": [{"port": PORT}, {"port": IPERF}]}],
        },
    }


def set_policies(client: Any, lab: str, count: int, present: set[int]) -> int:
    """Exactly ``count`` policies selecting x-a (plus the one allowing x-b when any); returns
    the resourceVersion both nodes must have enforced."""
    wanted = set(range(1, count + 1)) | ({0} if count else set())
    needed = 0
    for i in sorted(present - wanted):
        old = client.get(NetworkPolicy, f"bench-{i}", namespace="x")
        client.delete(NetworkPolicy, f"bench-{i}", namespace="x")
        needed = max(needed, int(old.metadata.resourceVersion) + 1)
    for i in sorted(wanted - present):
        made = client.create(codecs.from_dict(policy(i, None if i == 0 else "block")))
        needed = max(needed, int(made.metadata.resourceVersion))
    present.clear()
    present.update(wanted)
    return needed


def three_nodes(where: str) -> Topology:
    """examples/netpol.yaml with node3 on the same LAN (z-c moves to it)."""
    raw = yaml.safe_load(Path(load_topology("netpol").source).read_text())
    raw["name"] = f"b{secrets.token_hex(2)}-policy"
    raw["nodes"].append({"name": "node3", "network": "lan", "address": "192.168.7.12", "ipv6": "fd00:7::12"})
    next(p for p in raw["pods"] if p["name"] == "z-c")["node"] = "node3"
    path = f"{where}/netpol-3.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return load_topology(path)


def simulate(client: Any, nodes: int, pods: int) -> float:
    """``nodes`` Node objects, each with ``pods`` Running pods in namespace x labelled pod=b, as
    kubelets would report them; returns the seconds it took."""
    start = time.monotonic()
    for n in range(nodes):
        name = f"sim-{n}"
        client.create(Node(metadata=ObjectMeta(name=name, labels={"kubernetes.io/hostname": name})))
        for k in range(pods):
            pod = f"sim-{n}-{k}"
            kubelet.register_pod(client, "x", pod, name, {"pod": "b", "sim": "yes"})
            ip = SIM_PODS.network_address + n * 256 + k + 1
            kubelet.report_pod_ips(client, "x", pod, [str(ip)])
    return time.monotonic() - start


def latencies(client: Any, lab: str, changes: int, first: int) -> list[float]:
    """Seconds from each create of a policy selecting another pod (x-c: x-a's traffic is not
    touched) to its enforcement on every node."""
    out = []
    for k in range(changes):
        doc = policy(first + k)
        doc["spec"]["podSelector"] = {"matchLabels": {"pod": "c"}}
        start = time.monotonic()
        made = client.create(codecs.from_dict(doc))
        enforced(lab, int(made.metadata.resourceVersion))
        out.append(time.monotonic() - start)
        client.delete(NetworkPolicy, f"bench-{first + k}", namespace="x")
    return out


def enforced(lab: str, version: int, timeout: float = 60.0) -> float:
    """Seconds until every node's table includes ``version`` of the NetworkPolicies."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(
            int(
                ((cl.agent_request(lab, n, {"op": "status"}).get("policy") or {}).get("covered") or {}).get(
                    "networkpolicies", 0
                )
            )
            >= version
            for n in NODES
        ):
            return time.monotonic() - start
        time.sleep(0.005)
    raise TimeoutError(f"the nodes did not enforce version {version} in {timeout:.0f}s")


def conn_rate(lab: str, dst_ip: str, seconds: float) -> float:
    """New TCP connections per second from SRC to DST:PORT (connect, read the byte, close)."""
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with netns.entered(st.ns_name(lab, SRC)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # an RST on close: no TIME_WAIT, so the loop never runs out of ports (it did after ~30k)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with sock:
            sock.settimeout(2.0)
            sock.connect((dst_ip, PORT))
            sock.recv(1)
        done += 1
    return done / seconds


def stream(lab: str, dst_ip: str, seconds: int) -> float:
    out = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(lab, SRC), "iperf3", "-c", dst_ip, "-t", str(seconds), "-J"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def serve(lab: str) -> list[subprocess.Popen[bytes]]:
    ns = st.ns_name(lab, DST)
    accept = (
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('0.0.0.0',{PORT}));s.listen(512)\n"
        "while True:\n c,_=s.accept();c.sendall(b'k');c.close()\n"
    )
    return [
        subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", accept]),
        subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s"], stdout=subprocess.DEVNULL),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--sim-nodes", type=int, default=100)
    parser.add_argument("--sim-pods", type=int, default=10, help="pods per simulated node")
    args = parser.parse_args()
    where = tempfile.mkdtemp(prefix="podnet-bench-")
    topo = three_nodes(where)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bring_up(topo)
        state = st.LabState.load(topo.name)
        assert state is not None
        dst_ip = state.info["podIPs"][DST]["ips"][0]
        servers = serve(topo.name)
        time.sleep(1.0)
        client = connect(kubeapi.kubeconfig_path(topo.name))
        present: set[int] = set()
        rates: dict[int, list[float]] = {c: [] for c in COUNTS}
        streams: dict[int, list[float]] = {c: [] for c in COUNTS}
        for r in range(args.rounds):
            for count in COUNTS if r % 2 == 0 else tuple(reversed(COUNTS)):
                enforced(topo.name, set_policies(client, topo.name, count, present))
                rates[count].append(conn_rate(topo.name, dst_ip, args.seconds))
                streams[count].append(stream(topo.name, dst_ip, args.seconds))
                print(
                    f"round {r + 1} {count:>4} policies: {rates[count][-1]:8.0f} conn/s, "
                    f"{streams[count][-1] / 1e9:6.2f} Gbit/s",
                    file=sys.stderr,
                    flush=True,
                )
        enforced(topo.name, set_policies(client, topo.name, max(COUNTS), present))
        plain = latencies(client, topo.name, args.changes, 5000)
        made_in = simulate(client, args.sim_nodes, args.sim_pods)
        print(
            f"{args.sim_nodes} simulated nodes with {args.sim_nodes * args.sim_pods} pods made in "
            f"{made_in:.0f}s",
            file=sys.stderr,
        )
        with_sim = latencies(client, topo.name, args.changes, 6000)
        status = cl.agent_request(topo.name, "node1", {"op": "status"}).get("policy") or {}
        client.close()
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        bring_down(topo.name)
    med = {c: statistics.median(v) for c, v in rates.items()}
    smed = {c: statistics.median(v) for c, v in streams.items()}
    result = {
        "connectionsPerSecond": {
            str(c): {"median": round(med[c], 1), "runs": [round(x, 1) for x in rates[c]]} for c in COUNTS
        },
        "streamBitsPerSecond": {
            str(c): {"median": round(smed[c]), "runs": [round(x) for x in streams[c]]} for c in COUNTS
        },
        "ratios": {f"conn_{c}": round(med[c] / med[0], 3) for c in COUNTS[1:]}
        | {f"stream_{c}": round(smed[c] / smed[0], 3) for c in COUNTS[1:]},
        "enforcement": {"with": max(COUNTS), "nodes": len(NODES), "changes": args.changes, **stats(plain)},
        "enforcementSimulated": {
            "with": max(COUNTS),
            "nodes": len(NODES),
            "simulatedNodes": args.sim_nodes,
            "simulatedPods": args.sim_nodes * args.sim_pods,
            "entriesOnNode1": status.get("entries"),
            "changes": args.changes,
            **stats(with_sim),
        },
        "goals": {"conn_1000": 0.9, "stream_1000": 0.97, "enforcement_p99_ms": 1000},
    }
    for c in COUNTS:
        print(
            f"{c:>4} policies: {med[c]:8.0f} conn/s (x{med[c] / med[0]:.3f}), "
            f"{smed[c] / 1e9:6.2f} Gbit/s (x{smed[c] / smed[0]:.3f})"
        )
    e, sim = result["enforcement"], result["enforcementSimulated"]
    print(
        f"create -> enforced on {len(NODES)} nodes, {max(COUNTS)} policies in place: p50 {e['p50_ms']} ms, "
        f"p99 {e['p99_ms']} ms"
    )
    print(
        f"  with {sim['simulatedNodes']} simulated nodes ({sim['simulatedPods']} pods) on the API server: "
        f"p50 {sim['p50_ms']} ms, p99 {sim['p99_ms']} ms ({sim['entriesOnNode1']} entries on node1)"
    )
    write_json("bench/results/policy.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
