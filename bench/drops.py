"""What the drop monitor costs: pod-to-pod throughput with drop events on and off, same run.

examples/l2.yaml up twice at once: drop events on (``bpf.events.drop.enabled``, the default: the
pod guard logs each drop to NFLOG, the agent reads them) and off. iperf3 runs host-to-host and
pod-to-pod (node1-p1 -> node2-p1) in both labs, interleaved (``podnet.verify.perf.measure``).
Then the same again while a hostile pod (node1-p2 of each lab) floods spoofed UDP packets as fast
as it can, for a bounded time: the guard drops every one, and with events on each is a log
candidate (rate-limited per rule). Prints the medians, the on/off ratios, and how many events the
monitor kept against the packets the guard dropped; writes bench/results/drops.json.
Run as root after scripts/setup.sh:
    .venv/bin/python bench/drops.py [--repetitions 5] [--seconds 3]
"""

from __future__ import annotations

import contextlib
import datetime
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import labs_up, perf_arguments, write_json

from podnet.lab import cluster as cl
from podnet.lab.topology import load_topology
from podnet.lab.view import LabView
from podnet.util.proc import stop
from podnet.verify.perf import PerfReport, PerfTarget, measure

LABS: dict[str, list[str]] = {"bdm-on": [], "bdm-off": ["bpf.events.drop.enabled=false"]}
FLOOD_SECONDS = 240  # the flood stops by itself after this, whatever happens here
RAWSEND = Path(__file__).resolve().parent.parent / "tests" / "lab" / "rawsend.py"  # the tests' packet tool


def targets(views: dict[str, LabView]) -> list[PerfTarget]:
    on = views["bdm-on"]
    found = [PerfTarget("host", on.ns("node1"), on.ns("node2"), str(on.node_ip("node2")))]
    for lab, label in (("bdm-on", "events on"), ("bdm-off", "events off")):
        v = views[lab]
        found.append(PerfTarget(label, v.ns("node1-p1"), v.ns("node2-p1"), str(v.pod_ip("node2-p1"))))
    return found


@contextlib.contextmanager
def flood(views: dict[str, LabView]) -> Iterator[None]:
    """node1-p2 of every lab sends spoofed packets to node2-p1 until the block ends."""
    procs = []
    for v in views.values():
        argv = ["ip", "netns", "exec", v.ns("node1-p2"), sys.executable, str(RAWSEND), "flood", "10.244.77.7"]
        argv += [str(v.pod_ip("node2-p1")), str(FLOOD_SECONDS), "50000000"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for proc in procs:
            stop(proc)


def spoof_counts(name: str) -> tuple[int, int]:
    """(events the monitor kept as spoofed, packets the guard dropped as spoofed) on node1."""
    doc = cl.agent_request(name, "node1", {"op": "status"})
    events = int(((doc.get("drops") or {}).get("byReason") or {}).get("spoofed", 0))
    guard = doc.get("guard") or {}
    dropped = sum(int(e.get("spoofDrops", 0)) for e in guard.get("endpoints") or [])
    return events, dropped


def rows(report: PerfReport) -> dict[str, Any]:
    return {
        r.label: {"gbps": round(r.median, 3), "ratio": round(report.ratio(r.label), 3), "runs": r.runs_gbps}
        for r in report.results
    }


def main() -> int:
    args = perf_arguments(__doc__)
    base = load_topology("l2")
    with contextlib.ExitStack() as stack:
        views = labs_up(stack, base, LABS)

        def progress(m: str) -> None:
            print(m, file=sys.stderr)

        quiet = measure(targets(views), args.repetitions, args.seconds, progress)
        with flood(views):
            flooded = measure(targets(views), args.repetitions, args.seconds, progress)
        counts = {name: spoof_counts(name) for name in views}
    doc: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "repetitions": args.repetitions,
        "seconds": args.seconds,
        "labs": LABS,
        "quiet": rows(quiet),
        "flood": rows(flooded),
        "spoofed": {n: {"events": e, "guardDropped": d} for n, (e, d) in counts.items()},
    }
    print(f"\niperf3 medians of {args.repetitions} x {args.seconds} s, every path interleaved")
    for title, report in (("quiet", quiet), ("a pod flooding spoofed packets", flooded)):
        on, off = report.ratio("events on"), report.ratio("events off")
        print(f"{title}: pod/host with events on {on:.3f}, off {off:.3f}; on/off {on / off:.3f}")
        doc[f"onOff{'Quiet' if title == 'quiet' else 'Flood'}"] = round(on / off, 3)
    for name, (events, dropped) in counts.items():
        print(f"{name}: guard dropped {dropped} spoofed packets on node1, the monitor kept {events} events")
    write_json("bench/results/drops.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
