"""``podnet demo``: the seeds' story on the built-in lab, end to end, cleaning up after itself.

Each step is a real check on the lab's kernel datapath; the result is a table and a Markdown
report. The story grows with the project: underlay reachability and the pod-CIDR gap now,
the routing modes as they land.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import ipaddress
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podnet.lab import state as st
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology


@dataclass(frozen=True)
class Step:
    title: str
    ok: bool
    expected: bool
    detail: str

    @property
    def as_expected(self) -> bool:
        return self.ok == self.expected


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the routing-modes story on the built-in lab and write a report")
    p.add_argument("--report-dir", default="reports/demo", help="where the Markdown report goes")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_demo)


def underlay_steps(topo: Topology) -> list[Step]:
    from podnet.verify.probe import ping, tcp_probe

    ns: Callable[[str], str] = lambda h: st.ns_name(topo.name, h)  # noqa: E731
    n1, n2 = topo.host("node1"), topo.host("node2")
    steps = []
    res = tcp_probe(ns("node1"), ns("node2"), str(n2.primary.address.ip))
    steps.append(
        Step(
            f"node1 {n1.primary.address.ip} -> node2 {n2.primary.address.ip} over R1, R2 (TCP)",
            res.ok,
            True,
            res.detail,
        )
    )
    pod2 = n2.pod_cidr or ipaddress.IPv4Network("10.244.2.0/24")
    target = str(next(pod2.hosts()))
    res = ping(ns("node1"), target)
    steps.append(
        Step(f"node1 -> pod CIDR {pod2} without podnet (R1 has no route)", res.ok, False, res.detail)
    )
    return steps


def cmd_demo(args: argparse.Namespace) -> int:
    topo = load_topology("two-subnets")
    topo = dataclasses.replace(topo, name="demo")
    print(f"podnet demo: bringing up lab '{topo.name}' from {topo.source}", file=sys.stderr)
    steps: list[Step] = []
    try:
        bring_up(topo, progress=lambda m: print(f"  - {m}", file=sys.stderr), cluster=False)
        steps += underlay_steps(topo)
    finally:
        if not args.keep:
            bring_down(topo.name)
    report = write_report(Path(args.report_dir), topo, steps)
    if args.output == "json":
        print(json.dumps({"steps": [dataclasses.asdict(s) for s in steps], "report": str(report)}, indent=2))
    else:
        for s in steps:
            mark = "ok " if s.as_expected else "UNEXPECTED"
            print(f"[{mark}] {s.title}: {'reachable' if s.ok else 'not reachable'} ({s.detail})")
        print(f"\nreport: {report}")
    return 0 if all(s.as_expected for s in steps) else 1


def write_report(folder: Path, topo: Topology, steps: list[Step]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    lines = [
        f"# podnet demo — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Lab: `{topo.source}` (namespaces `pn-{topo.name}-*`).",
        "",
        "| step | result | expected |",
        "|---|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {s.title} | {'reachable' if s.ok else 'not reachable'} ({s.detail}) | "
            f"{'reachable' if s.expected else 'not reachable'} |"
        )
    path.write_text("\n".join(lines) + "\n")
    return path.resolve()
