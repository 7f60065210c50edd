"""CNI ADD latency in ENI mode against cluster-pool, and how long a pre-allocation shortfall takes
to become usable addresses on the node, in one run.

Two labs on etcd with native routing: examples/eni.yaml (``ipam.mode: eni`` in the lab's VPC: moto
behind its front, the VPC router) and examples/l2.yaml with cluster-pool (the reference). A trial
wires one pod on node1 of each lab in turn, as a runtime does (the CNI plugin with CNI_ARGS),
timing the plugin call, then deletes it; the labs take turns going first. An ENI ADD does what a
cluster-pool ADD does plus two policy rules; both take an address the node already holds.

Shortfall: the ENI lab's node1 then runs with ``preAllocate: 1`` and excess release after 1 s, so
it holds one spare address. Two pods are added back to back: the first takes the spare, the
second's ADD waits while the operator sees the shortfall (the agent's ``used`` in etcd), calls
AssignPrivateIpAddresses, the VPC starts delivering the address and the agent reads the
operator's new status. That ADD's latency minus the median ADD is the time from a shortfall to a
usable address. Both pods go; the operator gives the excess back; the next trial starts with one
spare again. Prints p50/p99 and the ratio, writes bench/results/eni.json. Run as root after
scripts/setup.sh:
    .venv/bin/python bench/eni.py [--trials 30] [--shortfall-trials 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from typing import Any

from benchlib import percentile, stats, write_json

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Pod, Topology, load_topology
from podnet.util import netns

LABS = {
    "cluster-pool": ("bme-cp", "l2", ["routingMode=native", "autoDirectNodeRoutes=true"]),
    "eni": ("bme-eni", "eni", []),
}


def up(name: str, example: str, sets: list[str]) -> Topology:
    base = load_topology(example)
    topo = apply_overrides(dataclasses.replace(base, name=name, pods=()), sets)
    bring_down(name)
    bring_up(topo)
    return topo


def add(topo: Topology, pod: Pod) -> tuple[float, dict[str, Any]]:
    netns.create(st.ns_name(topo.name, pod.name))
    started = time.perf_counter()
    code, out = cl.run_cni(topo.name, pod, "ADD")
    took = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{topo.name}: ADD {pod.name} failed: {out}")
    return took, out


def delete(topo: Topology, pod: Pod) -> None:
    cl.run_cni(topo.name, pod, "DEL")
    netns.remove(st.ns_name(topo.name, pod.name))


def spare(topo: Topology) -> tuple[int, int]:
    """(free addresses on node1's ENIs for pods, addresses marked for release)."""
    eni = cl.agent_request(topo.name, "node1", {"op": "status"})["eni"]
    free = sum(1 for e in eni["enis"] if e["forPods"] for owner in e["addresses"].values() if not owner)
    return free - len(eni["release"]), len(eni["release"])


def wait_for(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--shortfall-trials", type=int, default=10)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    labs: dict[str, Topology] = {}
    times: dict[str, list[float]] = {mode: [] for mode in LABS}
    waits: list[float] = []
    try:
        for mode, (name, example, sets) in LABS.items():
            print(f"lab {name}: {mode}", file=sys.stderr, flush=True)
            labs[mode] = up(name, example, sets)
        wait_for(lambda: spare(labs["eni"])[0] >= 8, "the ENI lab's pre-allocation")
        order = list(labs)
        for i in range(args.trials):
            for mode in order[i % len(order) :] + order[: i % len(order)]:
                pod = Pod(f"b{i}", "node1")
                took, _ = add(labs[mode], pod)
                times[mode].append(took)
                delete(labs[mode], pod)
        bring_down(labs["eni"].name)
        sets = ["eni.preAllocate=1", "eni.awsReleaseExcessIPs=true", "eni.excessIPReleaseDelay=1s"]
        eni = labs["eni"] = up(labs["eni"].name, "eni", sets)
        for i in range(args.shortfall_trials):
            wait_for(lambda: spare(eni) == (1, 0), "exactly one spare address")
            first, second = Pod(f"s{i}a", "node1"), Pod(f"s{i}b", "node1")
            add(eni, first)
            took, _ = add(eni, second)  # waits for the operator
            waits.append(took)
            delete(eni, first)
            delete(eni, second)
    finally:
        if not args.keep:
            for topo in labs.values():
                bring_down(topo.name)
    reference = percentile(times["cluster-pool"], 50)
    rows = {
        mode: {**stats(v), "ratio_p50": round(percentile(v, 50) / reference, 3)} for mode, v in times.items()
    }
    usual = percentile(times["eni"], 50)
    shortfall = {
        **stats(waits),
        "extra_p50_ms": round((percentile(waits, 50) - usual) * 1000, 2),
        "extra_p99_ms": round((percentile(waits, 99) - usual) * 1000, 2),
    }
    print(f"\nCNI ADD on node1, {args.trials} pods per lab, interleaved in rotating order")
    print(f"{'mode':<14}{'p50 ms':>9}{'p99 ms':>9}{'p50 / cluster-pool':>20}")
    for mode, row in rows.items():
        print(f"{mode:<14}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['ratio_p50']:>20}")
    print(f"\npre-allocation shortfall -> usable ENI address ({args.shortfall_trials} trials):")
    print(f"  the ADD that waited took p50 {shortfall['p50_ms']} ms / p99 {shortfall['p99_ms']} ms")
    print(
        f"  that is {shortfall['extra_p50_ms']} / {shortfall['extra_p99_ms']} ms more than an ADD with room"
    )
    write_json(
        "bench/results/eni.json",
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
