"""Time to bring a lab up and down at 10 and 40 nodes, on one segment and across 4 routers.

Prints a table and writes JSON (bench/results/lab_scale.json). Goal: 40 nodes up in < 20 s.
Run as root: .venv/bin/python bench/lab_scale.py
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchlib import write_json

from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, parse_topology

POOL = {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": ["10.244.0.0/16"]}}}  # outside the underlay


def one_segment(nodes: int) -> dict[str, Any]:
    return {
        "name": f"bs{nodes}",
        "cluster": POOL,
        "networks": [{"name": "lan", "cidr": "10.10.0.0/16"}],
        "nodes": [
            {"name": f"n{i}", "network": "lan", "address": f"10.10.{i // 200}.{i % 200 + 10}"}
            for i in range(nodes)
        ],
    }


def four_routers(nodes: int) -> dict[str, Any]:
    """Four racks, each behind its own router; the routers form a ring of /30 links."""
    racks = 4
    routers = []
    for r in range(racks):
        nxt, prv = (r + 1) % racks, (r - 1) % racks
        routers.append(
            {
                "name": f"r{r}",
                "interfaces": [
                    {"network": f"rack{r}", "address": f"10.{20 + r}.0.1"},
                    {"peer": f"r{nxt}", "address": f"172.30.{r}.1/30"},
                    {"peer": f"r{prv}", "address": f"172.30.{prv}.2/30"},
                ],
            }
        )
    return {
        "name": f"br{nodes}",
        "cluster": POOL,
        "networks": [{"name": f"rack{r}", "cidr": f"10.{20 + r}.0.0/16"} for r in range(racks)],
        "routers": routers,
        "nodes": [
            {
                "name": f"n{i}",
                "network": f"rack{i % racks}",
                "address": f"10.{20 + i % racks}.1.{i // racks + 10}",
                "gateway": f"10.{20 + i % racks}.0.1",
            }
            for i in range(nodes)
        ],
    }


def measure(topo: Topology) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        report = bring_up(topo, cluster=False)
        up = time.monotonic() - t0
    finally:
        t1 = time.monotonic()
        down_report = bring_down(topo.name)
        down = time.monotonic() - t1
    return {
        "lab": topo.name,
        "nodes": len(topo.nodes),
        "routers": len(topo.routers),
        "up_s": round(up, 3),
        "down_s": round(down, 3),
        "changes": report.changes,
        "namespaces": len(down_report.namespaces),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10,40")
    ap.add_argument("--json", default="bench/results/lab_scale.json")
    args = ap.parse_args(argv)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for shape in (one_segment, four_routers):
            row = measure(parse_topology(shape(n)))
            row["shape"] = "one segment" if shape is one_segment else "4 routers"
            rows.append(row)
            print(
                f"{row['shape']:<12} {n:>3} nodes: up {row['up_s']:6.2f}s  down {row['down_s']:6.2f}s  "
                f"({row['namespaces']} namespaces)",
                flush=True,
            )
    goal = next((r for r in rows if r["nodes"] == 40 and r["shape"] == "4 routers"), None)
    result = {
        "benchmark": "lab_scale",
        "goal": "40 nodes up in < 20 s",
        "rows": rows,
        "goal_met": all(r["up_s"] < 20 for r in rows if r["nodes"] >= 40) if goal else None,
    }
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
