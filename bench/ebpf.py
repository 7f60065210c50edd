"""Pod-to-pod throughput across nodes against host-to-host, per datapath, all in one run.

examples/l2.yaml (one segment) up six times at once: native routing with Legacy host routing
and with BPF host routing (``bpf.hostLegacyRouting=false``), VXLAN (the kernel's) and Geneve
(podnet's tc-BPF encapsulation), each with Legacy and with BPF host routing. iperf3 runs
host-to-host (node1 -> node2 of the native lab) and pod-to-pod (node1-p1 -> node2-p1) in each lab, interleaved
(``podnet.verify.perf.measure``: every repetition runs every target once), so each ratio compares
moments of the same shared machine. Also same-node pod-to-pod (node1-p1 -> node1-p2) with Legacy
and BPF host routing (redirect_peer). Prints the medians and ratios with the goals of issue 17
(native >= 0.97, VXLAN and Geneve >= 0.85 of host-to-host) and writes bench/results/ebpf.json.
Run as root after scripts/setup.sh:
    .venv/bin/python bench/ebpf.py [--repetitions 5] [--seconds 3]
"""

from __future__ import annotations

import contextlib
import datetime
import sys
from typing import Any

from benchlib import labs_up, perf_arguments, write_json

from podnet.lab.topology import load_topology
from podnet.lab.view import LabView
from podnet.verify.perf import PerfTarget, measure

TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
BPF = ["bpf.hostLegacyRouting=false"]
LABS: dict[str, list[str]] = {  # lab name: --set overrides of examples/l2.yaml
    "beb-native": [],
    "beb-nativebpf": BPF,
    "beb-vxlan": [*TUNNEL, "tunnelProtocol=vxlan"],
    "beb-vxlanbpf": [*TUNNEL, "tunnelProtocol=vxlan", *BPF],
    "beb-geneve": [*TUNNEL, "tunnelProtocol=geneve"],
    "beb-genevebpf": [*TUNNEL, "tunnelProtocol=geneve", *BPF],
}
GOALS = {
    "native": 0.97,
    "native+bpf": 0.97,
    "vxlan": 0.85,
    "vxlan+bpf": 0.85,
    "geneve": 0.85,
    "geneve+bpf": 0.85,
}


def targets(views: dict[str, LabView]) -> list[PerfTarget]:
    native = views["beb-native"]
    found = [PerfTarget("host", native.ns("node1"), native.ns("node2"), str(native.node_ip("node2")))]
    for lab, label in (("beb-native", "native"), ("beb-nativebpf", "native+bpf"), ("beb-vxlan", "vxlan"),
                       ("beb-vxlanbpf", "vxlan+bpf"), ("beb-geneve", "geneve"),
                       ("beb-genevebpf", "geneve+bpf")):  # fmt: skip
        v = views[lab]
        found.append(PerfTarget(label, v.ns("node1-p1"), v.ns("node2-p1"), str(v.pod_ip("node2-p1"))))
    for lab, label in (("beb-native", "same node"), ("beb-nativebpf", "same node+bpf")):
        v = views[lab]
        found.append(PerfTarget(label, v.ns("node1-p1"), v.ns("node1-p2"), str(v.pod_ip("node1-p2"))))
    return found


def main() -> int:
    args = perf_arguments(__doc__)
    base = load_topology("l2")
    with contextlib.ExitStack() as stack:
        views = labs_up(stack, base, LABS)
        report = measure(targets(views), args.repetitions, args.seconds, lambda m: print(m, file=sys.stderr))
    rows: dict[str, Any] = {}
    print(f"\niperf3 medians of {args.repetitions} x {args.seconds} s, every path interleaved")
    print(f"{'path':<16}{'Gbit/s':>9}{'vs host':>9}  goal")
    for result in report.results:
        ratio = 1.0 if result.label == "host" else report.ratio(result.label)
        goal = GOALS.get(result.label)
        verdict = "" if goal is None else f">= {goal}: {'met' if ratio >= goal else 'NOT met'}"
        print(f"{result.label:<16}{result.median:>9.2f}{ratio:>9.3f}  {verdict}")
        rows[result.label] = {
            "gbps": round(result.median, 3),
            "ratio": round(ratio, 3),
            "runs": result.runs_gbps,
        }
    write_json(
        "bench/results/ebpf.json",
        {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "repetitions": args.repetitions,
            "seconds": args.seconds,
            "labs": LABS,
            "paths": rows,
            "goals": GOALS,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
