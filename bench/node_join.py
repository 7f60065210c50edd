"""Node join -> route on every peer: through the Kubernetes API server against through etcd, one run.

Two labs of examples/l2.yaml (native routing, autoDirectNodeRoutes), one on each datastore, both
with the API server running (so both carry the same processes). A trial makes a node appear:
  - etcd: its node record under /podnet/v1/nodes/<name> (what a joining agent publishes);
  - kubernetes: its Node object and its PodnetNode with spec.ipam.podCIDRs (what the kubelet,
    the agent and the operator write);
and measures, from the write, until the kernel of *every* existing node has the route to the new
node's pod CIDR, timestamped by ``ip -timestamp monitor route`` running in each node (no polling).
Trials alternate between the labs. Prints p50/p99 per datastore and the ratio kubernetes/etcd,
writes bench/results/node_join.json. Run as root after scripts/setup.sh and scripts/build-kube.sh:
    .venv/bin/python bench/node_join.py [--trials 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchlib import percentile, write_json
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node

from podnet.kube.client import connect
from podnet.kube.resources import PodnetNode
from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.controlplane import client_tls, etcd_endpoints
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.model import NodeInfo
from podnet.store import keys
from podnet.store.client import Store
from podnet.store.nodes import NodeRecord
from podnet.util import netns

LABS = {"etcd": "bjetcd", "kubernetes": "bjkube"}
JOIN_TIMEOUT = 30.0


class RouteClock:
    """``ip -timestamp monitor route`` in each node: when did ``cidr`` appear there."""

    def __init__(self, topo: Topology) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._procs = []
        for node in topo.nodes:
            proc = subprocess.Popen(
                ["ip", "-n", st.ns_name(topo.name, node.name), "-timestamp", "monitor", "route"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            self._procs.append(proc)
            threading.Thread(target=self._read, args=(node.name, proc), daemon=True).start()
        time.sleep(0.3)  # the monitors subscribe

    def _read(self, node: str, proc: subprocess.Popen[str]) -> None:
        stamp = 0.0
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Timestamp:"):  # "Timestamp: Fri Nov 27 20:36:06 2026 123456 usec"
                parts = line.split()
                when = datetime.datetime.strptime(" ".join(parts[1:6]), "%a %b %d %H:%M:%S %Y")
                stamp = when.timestamp() + int(parts[6]) / 1e6
                continue
            if line.startswith("Deleted"):
                continue
            cidr = line.split()[0] if line.strip() else ""
            with self._lock:
                self.seen.setdefault((node, cidr), stamp)

    def when(self, node: str, cidr: str) -> float | None:
        with self._lock:
            return self.seen.get((node, cidr))

    def close(self) -> None:
        for proc in self._procs:
            proc.terminate()
            proc.wait(timeout=5)


def etcd_joiner(topo: Topology) -> tuple[Callable[[str, str, str], None], Callable[[str], None]]:
    cp_ns = st.ns_name(topo.name, topo.control_plane.name)
    with netns.entered(cp_ns):
        store = Store(etcd_endpoints(topo), tls=client_tls(topo, "lab"))

    def join(name: str, ip: str, cidr: str) -> None:
        record = NodeRecord(NodeInfo.from_json({"name": name, "ipv4": ip, "podCIDRs": [cidr]}))
        with netns.entered(cp_ns):
            store.put(keys.node_key(name), json.dumps(record.to_json()))

    def leave(name: str) -> None:
        with netns.entered(cp_ns):
            store.delete(keys.node_key(name))

    return join, leave


def kube_joiner(topo: Topology) -> tuple[Callable[[str, str, str], None], Callable[[str], None]]:
    client = connect(kubeapi.kubeconfig_path(topo.name))

    def join(name: str, ip: str, cidr: str) -> None:
        client.create(Node(metadata=ObjectMeta(name=name)))
        spec = {"addresses": [{"type": "InternalIP", "ip": ip}], "ipam": {"podCIDRs": [cidr]}}
        client.create(PodnetNode(metadata=ObjectMeta(name=name), spec=spec))

    def leave(name: str) -> None:
        client.delete(Node, name)
        client.delete(PodnetNode, name)

    return join, leave


def trial(topo: Topology, clock: RouteClock, join: Callable[..., None], i: int) -> float:
    name, ip, cidr = f"join{i}", f"192.168.1.{150 + i}", f"10.250.{i}.0/24"
    t0 = time.time()
    join(name, ip, cidr)
    deadline = time.monotonic() + JOIN_TIMEOUT
    while True:
        stamps = [clock.when(n.name, cidr) for n in topo.nodes]
        if all(s is not None for s in stamps):
            return max(s for s in stamps if s is not None) - t0
        if time.monotonic() > deadline:
            missing = [n.name for n, s in zip(topo.nodes, stamps, strict=True) if s is None]
            raise RuntimeError(f"{cidr} of {name} never reached {', '.join(missing)}")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--json", default="bench/results/node_join.json")
    args = ap.parse_args(argv)
    base = dataclasses.replace(load_topology("l2"), pods=(), kubernetes=True)
    topos = {
        kind: dataclasses.replace(apply_overrides(base, [f"datastore={kind}"]), name=lab)
        for kind, lab in LABS.items()
    }
    times: dict[str, list[float]] = {kind: [] for kind in topos}
    try:
        for topo in topos.values():
            bring_up(topo)
        clocks = {kind: RouteClock(topo) for kind, topo in topos.items()}
        joiners = {"etcd": etcd_joiner(topos["etcd"]), "kubernetes": kube_joiner(topos["kubernetes"])}
        for i in range(args.trials):
            order = list(topos) if i % 2 == 0 else list(topos)[::-1]
            for kind in order:
                join, leave = joiners[kind]
                times[kind].append(trial(topos[kind], clocks[kind], join, i))
                leave(f"join{i}")
        for clock in clocks.values():
            clock.close()
    finally:
        for topo in topos.values():
            bring_down(topo.name)
    result: dict[str, Any] = {"benchmark": "node_join", "trials": args.trials, "datastores": {}}
    for kind, values in times.items():
        result["datastores"][kind] = {
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
        }
    k8s, etcd = result["datastores"]["kubernetes"], result["datastores"]["etcd"]
    result["ratio_kubernetes_over_etcd"] = {
        q: round(k8s[f"{q}_ms"] / etcd[f"{q}_ms"], 2) for q in ("p50", "p99")
    }
    print(f"node join -> route on all {len(base.nodes)} peers ({args.trials} joins each, interleaved)")
    for kind, r in result["datastores"].items():
        print(f"  {kind:<11} p50 {r['p50_ms']:>7} ms   p99 {r['p99_ms']:>7} ms   max {r['max_ms']:>7} ms")
    print(f"  kubernetes/etcd: {result['ratio_kubernetes_over_etcd']}")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
