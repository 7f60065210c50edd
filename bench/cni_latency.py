"""CNI ADD/DEL latency: podnet against the reference bridge + host-local plugins, in one run.

On one node of a lab (l2, tunnel mode), N pod namespaces are made first; then for each plugin
ADD runs for every pod and then DEL for every pod, each plugin executed exactly as a container
runtime does it (``ip netns exec <node> <plugin>`` with the CNI environment and the network
configuration on stdin). The two plugins alternate in blocks so that machine noise hits both.
Prints p50/p99 and writes JSON (bench/results/cni_latency.json). Run as root.
Goal: podnet's ADD p50 no slower than the reference's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns

REF_DIR = Path("/usr/lib/cni")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_plugin(
    node_ns: str, binary: str, conf: dict[str, Any], command: str, cid: str, pod_ns: str, cni_path: str
) -> float:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": str(netns.NETNS_DIR / pod_ns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": cni_path,
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
    }
    t0 = time.perf_counter()
    res = subprocess.run(
        ["ip", "netns", "exec", node_ns, binary],
        input=json.dumps(conf),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{binary} {command} {cid} failed: {res.stdout} {res.stderr}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--json", default="bench/results/cni_latency.json")
    args = ap.parse_args(argv)
    if not (REF_DIR / "bridge").exists():
        print("reference plugins missing: apt-get install containernetworking-plugins", file=sys.stderr)
        return 2
    topo = apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"])
    topo = dataclasses.replace(topo, name="bcni", pods=())
    bring_up(topo)
    try:
        results = measure(topo.name, args.pods)
    finally:
        bring_down(topo.name)
    print_table(results)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"json: {out}")
    return 0


def measure(lab: str, pods: int) -> dict[str, Any]:
    node_ns = st.ns_name(lab, "node1")
    data_dir = st.lab_dir(lab) / "host-local"
    plugins = {
        "podnet": (cl.cni_binary(lab), cl.netconf(lab, "node1"), str(cl.cni_bin_dir(lab))),
        "bridge+host-local": (
            str(REF_DIR / "bridge"),
            {
                "cniVersion": "1.0.0",
                "name": "refnet",
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": str(data_dir)},
            },
            str(REF_DIR),
        ),
    }
    names = {p: [st.ns_name(lab, f"{p[:3]}{i}") for i in range(pods)] for p in plugins}
    timings: dict[str, dict[str, list[float]]] = {p: {"ADD": [], "DEL": []} for p in plugins}
    state = st.LabState.load(lab)
    assert state is not None, f"lab {lab} has no state"
    # write-ahead, like the lab itself: after a crash `podnet lab down bcni` finds these too
    state.namespaces.extend(ns for p in plugins for ns in names[p] if ns not in state.namespaces)
    state.save()
    try:
        for p in plugins:
            for ns in names[p]:
                netns.create(ns)
        block = 10
        for command in ("ADD", "DEL"):
            for start in range(0, pods, block):  # alternate plugins block by block
                for p, (binary, conf, cni_path) in plugins.items():
                    for ns in names[p][start : start + block]:
                        timings[p][command].append(
                            run_plugin(node_ns, binary, conf, command, ns, ns, cni_path)
                        )
    finally:
        for p in plugins:
            for ns in names[p]:
                netns.remove(ns)
    summary: dict[str, Any] = {"benchmark": "cni_latency", "pods": pods, "plugins": {}}
    for p, t in timings.items():
        summary["plugins"][p] = {
            cmd: {
                "p50_ms": round(statistics.median(v) * 1000, 2),
                "p99_ms": round(percentile(v, 99) * 1000, 2),
                "n": len(v),
            }
            for cmd, v in t.items()
        }
    pn, ref = (
        summary["plugins"]["podnet"]["ADD"]["p50_ms"],
        summary["plugins"]["bridge+host-local"]["ADD"]["p50_ms"],
    )
    summary["add_p50_ratio_podnet_over_reference"] = round(pn / ref, 3)
    summary["goal"] = "podnet ADD p50 <= reference ADD p50"
    summary["goal_met"] = pn <= ref
    return summary


def print_table(results: dict[str, Any]) -> None:
    print(f"CNI latency, {results['pods']} pods on one node (ms)")
    print(f"{'plugin':<20} {'ADD p50':>8} {'ADD p99':>8} {'DEL p50':>8} {'DEL p99':>8}")
    for p, r in results["plugins"].items():
        print(
            f"{p:<20} {r['ADD']['p50_ms']:>8} {r['ADD']['p99_ms']:>8} "
            f"{r['DEL']['p50_ms']:>8} {r['DEL']['p99_ms']:>8}"
        )
    print(
        f"podnet/reference ADD p50: {results['add_p50_ratio_podnet_over_reference']} "
        f"(goal met: {results['goal_met']})"
    )


if __name__ == "__main__":
    sys.exit(main())
