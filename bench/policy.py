"""NetworkPolicy's cost, in one run against the same lab without policies (issue 28).

On examples/netpol.yaml (two nodes, VXLAN, the Kubernetes datastore), pod x-b (node2) talks to
pod x-a (node1). Rounds interleave 0, 100 and 1000 policies selecting x-a (each allows a /32 of
its own on port 7000; one more allows x-b), so machine noise hits every count alike:
- new TCP connections per second, x-b -> x-a:7000 (a connect/accept/close loop for --seconds);
- the throughput of one established iperf3 stream x-b -> x-a;
- the time from a policy's create call to its enforcement on both nodes (each agent's table
  includes the policy's resourceVersion), p50/p99 over --changes creates, with 1000 policies in
  place.
Prints the figures and the ratios against 0 policies, writes bench/results/policy.json.
Goals: connections/s with 1000 policies >= 0.9 of none; stream >= 0.97; enforcement p99 <= 1 s.
Run as root after scripts/build-kube.sh.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

from benchlib import stats, write_json
from lightkube import codecs
from lightkube.resources.networking_v1 import NetworkPolicy

from podnet.kube.client import connect
from podnet.lab import cluster as cl
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns

PORT = 7000
IPERF = 5201  # iperf3's control and data connections
SRC, DST = "x-b", "x-a"
COUNTS = (0, 100, 1000)


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


def enforced(lab: str, version: int, timeout: float = 60.0) -> float:
    """Seconds until both nodes' tables include ``version`` of the NetworkPolicies."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(
            int(
                ((cl.agent_request(lab, n, {"op": "status"}).get("policy") or {}).get("covered") or {}).get(
                    "networkpolicies", 0
                )
            )
            >= version
            for n in ("node1", "node2")
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
    args = parser.parse_args()
    topo = dataclasses.replace(load_topology("netpol"), name=f"b{secrets.token_hex(2)}-policy")
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
        latencies = []
        for k in range(args.changes):  # a policy selecting another pod: x-a's traffic is not touched
            doc = policy(5000 + k)
            doc["spec"]["podSelector"] = {"matchLabels": {"pod": "c"}}
            start = time.monotonic()
            made = client.create(codecs.from_dict(doc))
            enforced(topo.name, int(made.metadata.resourceVersion))
            latencies.append(time.monotonic() - start)
            client.delete(NetworkPolicy, f"bench-{5000 + k}", namespace="x")
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
        "enforcement": {"with": max(COUNTS), "changes": args.changes, **stats(latencies)},
        "goals": {"conn_1000": 0.9, "stream_1000": 0.97, "enforcement_p99_ms": 1000},
    }
    for c in COUNTS:
        print(
            f"{c:>4} policies: {med[c]:8.0f} conn/s (x{med[c] / med[0]:.3f}), "
            f"{smed[c] / 1e9:6.2f} Gbit/s (x{smed[c] / smed[0]:.3f})"
        )
    e = result["enforcement"]
    print(
        f"create -> enforced on both nodes, {max(COUNTS)} policies in place: p50 {e['p50_ms']} ms, "
        f"p99 {e['p99_ms']} ms"
    )
    write_json("bench/results/policy.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
