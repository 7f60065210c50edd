"""Pod-to-pod against host-to-host, per datapath, by the method `podnet perf` uses (issue 31).

examples/l2.yaml (one segment) up once per datapath at the same time: native routing, VXLAN (the
kernel's device) and Geneve (podnet's tc-BPF encapsulation), each with BPF host routing (the
default) and with Legacy host routing (``bpf.hostLegacyRouting=true``). In each lab, in turn,
``podnet.verify.perf.measure`` runs what ``podnet perf --parallel 4`` runs: host-to-host (node1 ->
node2) and pod-to-pod (node1-p1 -> node2-p1), forward and reverse, 4 streams, and TCP
request/response (sockperf ping-pong), interleaved, client and server pinned to the same CPUs,
the ratio of each repetition taken against the host run beside it. The native labs add
same-node pod-to-pod (node1-p1 -> node1-p2). Prints each ratio with its spread and the goals of
issue 31, writes bench/results/ebpf.json. Run as root after scripts/setup.sh:
    .venv/bin/python bench/ebpf.py [--repetitions 5] [--seconds 3] [--labs native,vxlan]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from typing import Any

from benchlib import labs_up, write_json

from podnet.lab.topology import load_topology
from podnet.lab.view import LabView
from podnet.verify.perf import PerfReport, PerfTarget, lab_targets, measure, options_for

TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
LEGACY = ["bpf.hostLegacyRouting=true"]
BPF = ["bpf.hostLegacyRouting=false"]  # the default; said, so that the bench means the same on any commit
BIG_TCP = ["enableIPv4BIGTCP=true"]  # 192 KiB packets on the nodes' devices and the pods' (native only)
LABS: dict[str, list[str]] = {  # path: --set overrides of examples/l2.yaml
    "native": BPF,
    "native legacy": LEGACY,
    "vxlan": [*TUNNEL, "tunnelProtocol=vxlan", *BPF],
    "vxlan legacy": [*TUNNEL, "tunnelProtocol=vxlan", *LEGACY],
    "geneve": [*TUNNEL, "tunnelProtocol=geneve", *BPF],
    "geneve legacy": [*TUNNEL, "tunnelProtocol=geneve", *LEGACY],
    "native bigtcp": [*BPF, *BIG_TCP],
    "native legacy bigtcp": [*LEGACY, *BIG_TCP],
}
GOALS = {  # forward and reverse throughput, and request/response, against host-to-host
    "native": 1.0,
    "native legacy": 0.97,
    "native bigtcp": 1.0,
    "native legacy bigtcp": 0.97,
    "vxlan": 0.95,
    "geneve": 0.95,
}
RR_GOAL = 0.95


def lab_name(path: str) -> str:
    return "beb-" + path.replace(" legacy", "l").replace(" bigtcp", "b")


def targets(path: str, view: LabView) -> list[PerfTarget]:
    found = lab_targets(view)
    if path.startswith("native"):
        found.append(
            PerfTarget("same node", view.ns("node1-p1"), view.ns("node1-p2"), str(view.pod_ip("node1-p2")))
        )
    return found


def rows(path: str, report: PerfReport) -> list[dict[str, Any]]:
    out = []
    for r in report.metrics:
        if r.label == report.baseline:
            continue
        what = "same node" + path.removeprefix("native") if r.label == "same node" else path
        goal = RR_GOAL if r.metric.rr and what == path else GOALS.get(what) if not r.metric.rr else None
        low, high = r.spread
        out.append(
            {
                "path": what,
                "metric": r.metric.name,
                "ratio": round(r.ratio, 3),
                "spread": [round(low, 3), round(high, 3)],
                "wide": r.wide,
                "median": round(r.median, 3),
                "host": round(report.of(report.baseline, r.metric.name).median, 3),
                "unit": r.metric.unit,
                "goal": goal,
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--labs", default=",".join(LABS), help="comma-separated paths: " + ", ".join(LABS))
    parser.add_argument("--parallel", type=int, default=4, help="the streams of the -P metric (0: none)")
    args = parser.parse_args()
    wanted = {p: LABS[p] for p in args.labs.split(",")}
    found: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        views = labs_up(stack, load_topology("l2"), {lab_name(p): sets for p, sets in wanted.items()})
        for path in wanted:
            view = views[lab_name(path)]
            report = measure(
                targets(path, view),
                args.repetitions,
                args.seconds,
                lambda m, p=path: print(f"{p}: {m}", file=sys.stderr, flush=True),
                options_for(args.parallel),
            )
            found += rows(path, report)
    print(
        f"\nmedians of {args.repetitions} x {args.seconds} s per lab; ratio = median of per-repetition ratios"
    )
    print(f"{'path':<25}{'metric':<18}{'ratio':>7}  {'spread':<13} goal")
    for row in found:
        goal = row["goal"]
        verdict = "" if goal is None else f">= {goal}: {'met' if row['ratio'] >= goal else 'NOT met'}"
        verdict += "  (spread too wide to conclude)" if row["wide"] else ""
        low, high = row["spread"]
        print(f"{row['path']:<25}{row['metric']:<18}{row['ratio']:>7.3f}  {low:.3f}-{high:.3f}  {verdict}")
    write_json(
        "bench/results/ebpf.json",
        {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "repetitions": args.repetitions,
            "seconds": args.seconds,
            "labs": wanted,
            "rows": found,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
