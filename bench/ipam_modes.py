"""CNI ADD latency per IPAM mode against cluster-pool, and how long a pod waits when its pool's
pre-allocation falls short, in one run.

Four labs of examples/l2.yaml (native routing), all on the Kubernetes datastore so that every
mode carries the same processes (kube-apiserver, the agents' pod lookups): ipam.mode
cluster-pool (the reference), kubernetes, crd and multi-pool. A trial wires one pod on node1 of
each lab in turn, as a kubelet does (Pod object first, then the CNI plugin with the kubelet's
CNI_ARGS), timing the plugin call, and deletes it; the modes take turns trial by trial, each
mode going first in turn (measured: the first of a round is a few percent faster).

Shortfall: the multi-pool lab also has a pool ``ondemand`` (/29 blocks) with pre-allocation 0, so a
node holds none of it until a pod asks: that pod's ADD waits while the agent asks for a CIDR, the
operator carves one, and the node puts its router IP up. Its latency minus the median ADD is the
time from the shortfall to the new CIDR being usable; after its DEL the node gives the CIDR back,
so every trial starts short again. Prints p50/p99 and ratios, writes bench/results/ipam_modes.json.
Run as root after scripts/setup.sh and scripts/build-kube.sh:
    .venv/bin/python bench/ipam_modes.py [--trials 30] [--shortfall-trials 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from typing import Any

from benchlib import percentile, stats, write_json

from podnet.kube.client import connect
from podnet.kube.resources import PodnetNode
from podnet.lab import cluster as cl
from podnet.lab import kubeapi, kubelet
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Pod, Topology, load_topology
from podnet.util import netns

POOLS = {
    "default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}},
    "ondemand": {"ipv4": {"cidrs": ["10.252.0.0/24"], "maskSize": 29}},
}
MODES = {
    "cluster-pool": ("bim-cp", ["ipam.mode=cluster-pool"]),
    "kubernetes": ("bim-k8s", ["ipam.mode=kubernetes"]),
    "crd": ("bim-crd", ["ipam.mode=crd"]),
    "multi-pool": (
        "bim-mp",
        [
            "ipam.mode=multi-pool",
            f"ipam.operator.autoCreatePodIPPools={json.dumps(POOLS)}",
            "ipam.multiPoolPreAllocation=default=8,ondemand=0",
        ],
    ),
}


def up(name: str, sets: list[str]) -> Topology:
    base = load_topology("l2")
    topo = apply_overrides(dataclasses.replace(base, name=name, pods=()), ["datastore=kubernetes", *sets])
    bring_down(name)
    bring_up(topo)
    return topo


def add_del(topo: Topology, pod: Pod) -> tuple[float, dict[str, Any]]:
    """One pod on its node as a kubelet wires it: (ADD seconds, CNI result); then DEL."""
    pod_ns = st.ns_name(topo.name, pod.name)
    netns.create(pod_ns)
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        kubelet.ensure_namespace(client, pod.namespace)
        uid = kubelet.register_pod(client, pod.namespace, pod.name, pod.node, annotations=pod.annotations)
        args = kubelet.cni_args(pod.namespace, pod.name, cl.container_id(topo.name, pod.name), uid)
        started = time.perf_counter()
        code, out = cl.run_cni(topo.name, pod, "ADD", args)
        took = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"{topo.name}: ADD {pod.name} failed: {out}")
        cl.run_cni(topo.name, pod, "DEL", args)
        kubelet.delete_pod(client, pod.namespace, pod.name)
    finally:
        client.close()
        netns.remove(pod_ns)
    return took, out


def holds(topo: Topology, pool: str) -> list[str]:
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        obj = client.get(PodnetNode, "node1")
    finally:
        client.close()
    allocated = ((obj.spec or {}).get("ipam") or {}).get("pools", {}).get("allocated") or []
    return next((list(e["cidrs"]) for e in allocated if e["pool"] == pool), [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--shortfall-trials", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    labs: dict[str, Topology] = {}
    try:
        for mode, (name, sets) in MODES.items():
            print(f"lab {name}: {mode}", file=sys.stderr, flush=True)
            labs[mode] = up(name, sets)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        order = list(labs)
        for i in range(args.trials):
            for mode in order[i % len(order) :] + order[: i % len(order)]:  # each mode first in turn
                took, _ = add_del(labs[mode], Pod(f"b{i}", "node1"))
                times[mode].append(took)
        mp = labs["multi-pool"]
        waits: list[float] = []
        for i in range(args.shortfall_trials):
            deadline = time.monotonic() + 60
            while holds(mp, "ondemand") and time.monotonic() < deadline:  # given back after the last DEL
                time.sleep(0.1)
            pod = Pod(f"od{i}", "node1", annotations={"ipam.podnet.io/ip-pool": "ondemand"})
            took, out = add_del(mp, pod)
            assert out["ips"][0]["address"].startswith("10.252."), out
            waits.append(took)
    finally:
        if not args.keep:
            for topo in labs.values():
                bring_down(topo.name)
    reference = percentile(times["cluster-pool"], 50)
    rows = {
        mode: {**stats(v), "ratio_p50": round(percentile(v, 50) / reference, 3)} for mode, v in times.items()
    }
    usual = percentile(times["multi-pool"], 50)
    shortfall = {
        **stats(waits),
        "extra_p50_ms": round((percentile(waits, 50) - usual) * 1000, 2),
        "extra_p99_ms": round((percentile(waits, 99) - usual) * 1000, 2),
    }
    print(
        f"\nCNI ADD on node1, {args.trials} pods per mode, interleaved in rotating order, as a kubelet would"
    )
    print(f"{'mode':<14}{'p50 ms':>9}{'p99 ms':>9}{'p50 / cluster-pool':>20}")
    for mode, row in rows.items():
        print(f"{mode:<14}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['ratio_p50']:>20}")
    print(f"\npre-allocation shortfall -> new CIDR usable ({args.shortfall_trials} trials):")
    print(f"  the ADD that waited took p50 {shortfall['p50_ms']} ms / p99 {shortfall['p99_ms']} ms")
    extra = f"{shortfall['extra_p50_ms']} / {shortfall['extra_p99_ms']} ms"
    print(f"  that is {extra} more than an ADD with room")
    write_json(
        "bench/results/ipam_modes.json",
        {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "trials": args.trials,
            "add": rows,
            "shortfall": {**shortfall, "trials": args.shortfall_trials},
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
