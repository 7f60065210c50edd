"""CNI ADD/DEL latency through cnitool: podnet against the reference bridge + host-local, one run.

On one node of a lab (l2, tunnel mode, the pod guard on), N pod namespaces per plugin are made
first; then every ADD and then every DEL goes through the upstream ``cnitool`` (built from
Debian's source by scripts/runtime-tools.sh), run in the node's namespace exactly as a runtime's
libcni runs plugins: it reads the conflist, execs the plugin(s), caches the result. The two
plugins alternate call by call (which one goes first alternates too), so machine noise hits
both. Prints p50/p99 and the ratios podnet/reference, and writes JSON
(bench/results/cni_latency.json). Run as root after scripts/runtime-tools.sh.
Goal: podnet's ADD and DEL p50 and p99 at or below the reference's (ratios <= 1.0).
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
from pathlib import Path
from typing import Any

from benchlib import percentile, write_json

from podnet import owned
from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns

REF_DIR = Path("/usr/lib/cni")


def find_cnitool() -> Path:
    """cnitool as scripts/runtime-tools.sh built it (its summary line ``cnitool=<path>``)."""
    cache = Path(os.environ.get("PODNET_CACHE", "/var/cache/podnet"))
    found = sorted(cache.glob("cnitool-*/bin/cnitool"))
    if not found:
        raise SystemExit(f"cnitool is not built under {cache}: run scripts/runtime-tools.sh first")
    return found[-1]


def run_cnitool(
    cnitool: Path, node_ns: str, env: dict[str, str], command: str, network: str, pod: str
) -> float:
    """One ``cnitool add|del <network> <netns>`` in the node's namespace; seconds it took."""
    argv = ["nsenter", f"--net={netns.NETNS_DIR / node_ns}", str(cnitool), command.lower(), network,
            str(netns.NETNS_DIR / pod)]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"cnitool {command} {network} {pod} failed: {res.stdout} {res.stderr}")
    return elapsed


def retired_gone_after(node_ns: str, limit: float = 10.0) -> float | None:
    """Milliseconds until no link of podnet's retired group is left on the node (None: not
    within ``limit`` seconds)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        shown = subprocess.run(
            ["ip", "-n", node_ns, "-o", "link", "show", "group", str(owned.RETIRED_GROUP)],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        if not shown.strip():
            return round((time.perf_counter() - t0) * 1000, 1)
        time.sleep(0.002)
    return None


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
    write_json(args.json, results)
    return 0


def measure(lab: str, pods: int) -> dict[str, Any]:
    from podnet.cni.install import plugin_kind

    cnitool = find_cnitool()
    node_ns = st.ns_name(lab, "node1")
    work = st.lab_dir(lab) / "cnibench"
    bin_dir, conf_dir = work / "bin", work / "net.d"
    for d in (bin_dir, conf_dir, work / "cache"):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("bridge", "host-local"):
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(REF_DIR / name)
    link = bin_dir / "podnet"
    if not link.exists():
        link.symlink_to(cl.cni_binary(lab))
    podnet_conf = {k: v for k, v in cl.netconf(lab, "node1").items() if k not in ("cniVersion", "name")}
    conflists = {
        "podnet": {"cniVersion": "1.0.0", "name": "podnet", "plugins": [podnet_conf]},
        "bridge+host-local": {
            "cniVersion": "1.0.0",
            "name": "refnet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": str(work / "ipam")},
                }
            ],
        },
    }
    for conflist in conflists.values():
        (conf_dir / f"{conflist['name']}.conflist").write_text(json.dumps(conflist))
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "NETCONFPATH": str(conf_dir),
        "CNI_PATH": str(bin_dir),
        "CNI_CACHE_DIR": str(work / "cache"),  # never the machine's /var/lib/cni
    }
    plugins = list(conflists)
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
        for p in plugins:  # one warm-up pair each: first-call costs (bridge creation) are not timed
            run_cnitool(cnitool, node_ns, env, "ADD", conflists[p]["name"], names[p][0])
            run_cnitool(cnitool, node_ns, env, "DEL", conflists[p]["name"], names[p][0])
        for command in ("ADD", "DEL"):
            for i in range(pods):
                order = plugins if i % 2 == 0 else plugins[::-1]
                for p in order:
                    network = conflists[p]["name"]
                    timings[p][command].append(
                        run_cnitool(cnitool, node_ns, env, command, network, names[p][i])
                    )
        purge_ms = retired_gone_after(node_ns)
    finally:
        for p in plugins:
            for ns in names[p]:
                netns.remove(ns)
    summary: dict[str, Any] = {
        "benchmark": "cni_latency",
        "through": f"cnitool ({cnitool})",
        "podnetPlugin": plugin_kind("auto"),
        "pods": pods,
        "plugins": {},
    }
    for p, t in timings.items():
        summary["plugins"][p] = {
            cmd: {
                "p50_ms": round(statistics.median(v) * 1000, 2),
                "p99_ms": round(percentile(v, 99) * 1000, 2),
                "n": len(v),
            }
            for cmd, v in t.items()
        }
    ours, ref = summary["plugins"]["podnet"], summary["plugins"]["bridge+host-local"]
    ratios = {
        f"{cmd}_{q}": round(ours[cmd][f"{q}_ms"] / ref[cmd][f"{q}_ms"], 3)
        for cmd in ("ADD", "DEL")
        for q in ("p50", "p99")
    }
    summary["ratios_podnet_over_reference"] = ratios
    # podnet's DEL answers before the kernel deletes the veth (docs/cni.md "Where a DEL's time
    # goes"): how long after the last DEL the node had no retired veth left
    summary["podnet_retired_veths_gone_after_last_del_ms"] = purge_ms
    summary["goal"] = "podnet ADD and DEL p50 and p99 <= the reference's (every ratio <= 1.0)"
    summary["goal_met"] = all(r <= 1.0 for r in ratios.values())
    return summary


def print_table(results: dict[str, Any]) -> None:
    print(
        f"CNI latency through cnitool, {results['pods']} pods per plugin on one node (ms), "
        f"podnet's {results['podnetPlugin']} plugin"
    )
    print(f"{'plugin':<20} {'ADD p50':>8} {'ADD p99':>8} {'DEL p50':>8} {'DEL p99':>8}")
    for p, r in results["plugins"].items():
        print(
            f"{p:<20} {r['ADD']['p50_ms']:>8} {r['ADD']['p99_ms']:>8} "
            f"{r['DEL']['p50_ms']:>8} {r['DEL']['p99_ms']:>8}"
        )
    ratios = ", ".join(f"{k} {v}" for k, v in results["ratios_podnet_over_reference"].items())
    print(f"podnet/reference: {ratios} (goal met: {results['goal_met']})")
    gone = results["podnet_retired_veths_gone_after_last_del_ms"]
    print(f"podnet's retired veths were all deleted {gone} ms after the last DEL of the run")


if __name__ == "__main__":
    sys.exit(main())
