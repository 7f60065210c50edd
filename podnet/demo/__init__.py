"""``podnet demo``: the seeds' story on real labs, end to end, cleaning up after itself.

1. two-subnets in tunnel mode: status, the connectivity test, a capture on the R1-R2 link that
   shows VXLAN, a diagram. 2. the same lab in native mode without underlay routes: pod-to-pod
   fails and ``diagnose`` names router R1. 3. the same lab in native mode with BGP: the routers
   learn the pod CIDRs (``proto bird``), pods reach each other, the R1-R2 link carries plain pod
   addresses. 4. l2 (one segment) in VXLAN, Geneve (eBPF) and native mode at once: iperf3
   host-to-host against pod-to-pod through each, interleaved, medians and ratios, a PNG. 5. the
   IPAM modes side by side (``demo.ipam``): each pod's address and where it came from. 6. AWS
   ENI mode in the lab's VPC (``demo.eni``): VPC addresses, no SNAT, egress through the pod's
   own ENI. 7. dual stack with BGP in both families (``demo.dual``): IPv6 pods routed natively
   across the routers, masqueraded only towards the world. 8. real kubelets + containerd
   (``demo.kubelets``): a kubectl Deployment addressed by podnet, scaled up and down. Each
   step compares what happened with what should happen; the exit status is 0 only when every
   step behaved as expected. A Markdown report goes to ``--report-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from podnet.demo.dual import part_dual_stack
from podnet.demo.eni import part_eni
from podnet.demo.ipam import part_ipam
from podnet.demo.kubelets import part_kubelets
from podnet.demo.parts import Part, lab, say

GOALS = {"native": 1.0, "vxlan": 0.95, "geneve": 0.95}  # BPF host routing (the default; issue 31)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the routing-modes story on real labs and write a report")
    p.add_argument("--report-dir", default="reports/demo", help="where the Markdown report goes")
    p.add_argument("--keep", action="store_true", help="leave the labs up at the end")
    p.add_argument("--repetitions", type=int, default=5, help="interleaved iperf3 runs per path (default 5)")
    p.add_argument("--seconds", type=int, default=3, help="iperf3 -t per run (default 3)")
    p.add_argument("--skip-perf", action="store_true", help="leave out the l2 throughput comparison")
    p.add_argument(
        "--datastore",
        choices=["etcd", "kubernetes"],
        default="etcd",
        help="where the labs keep node records: the embedded etcd (default) or a kube-apiserver",
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    folder = Path(args.report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Part] = []
    print(
        f"podnet demo: tunnel vs native routing on real labs, datastore {args.datastore} "
        "(takes about 3 minutes, 6-7 with the throughput comparison)",
        file=sys.stderr,
    )
    for run in (
        part_tunnel,
        part_native,
        part_bgp,
        None if args.skip_perf else part_perf,
        part_ipam,
        part_eni,
        part_dual_stack,
        part_kubelets,
    ):
        if run is None:
            continue
        part = Part(run.__doc__.splitlines()[0] if run.__doc__ else run.__name__)
        parts.append(part)
        started = time.monotonic()
        try:
            run(part, folder, args)
        except Exception as exc:  # a broken part is reported, the others still run
            part.step(f"{part.title}: ran to the end", False, True, f"{type(exc).__name__}: {exc}")
        part.seconds = round(time.monotonic() - started, 1)
    report = write_report(folder, parts, args.datastore)
    steps = [s for p in parts for s in p.steps]
    if args.output == "json":
        doc = {
            "ok": all(s.as_expected for s in steps),
            "report": str(report),
            "parts": [
                {
                    "title": p.title,
                    "seconds": p.seconds,
                    "steps": [dataclasses.asdict(s) for s in p.steps],
                    "data": p.data,
                }
                for p in parts
            ],
        }
        print(json.dumps(doc, indent=2))
    else:
        print_table(parts)
        print(f"\nreport: {report}")
    return 0 if all(s.as_expected for s in steps) else 1


def print_table(parts: list[Part]) -> None:
    for p in parts:
        print(f"\n{p.title} ({p.seconds:g} s)")
        for s in p.steps:
            mark = "ok " if s.as_expected else "UNEXPECTED"
            print(f"  [{mark}] {s.title}: {'yes' if s.ok else 'no'} ({s.detail})")
        for mode, pods in (p.data.get("ipam") or {}).items():
            for pod in pods:
                print(
                    f"    {mode:<13} {pod['pod']:<10} {pod['node']:<7} {pod['address']:<13} {pod['source']}"
                )
        perf = p.data.get("perf")
        if perf:
            print()
            print(perf_table(perf))


# ---- part 1: tunnel ---------------------------------------------------------------------------


def part_tunnel(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """1. two-subnets, routingMode=tunnel: pods reach each other across R1 and R2 through VXLAN"""
    from podnet.lab.bird import node_configs
    from podnet.verify.capture import capture, default_pair
    from podnet.verify.connectivity import run_checks
    from podnet.verify.status import cluster_status

    with lab("two-subnets", "demo-tun", ["routingMode=tunnel"], args) as view:
        status = cluster_status(view, None, False)["nodes"]
        peers = [(n, p) for n, s in status.items() for p in s.get("peers", [])]
        part.step(
            "every peer is reached through the VXLAN tunnel (kernel route) and answers",
            all(p["kernelReach"] == "tunnel" and p["health"] == "ok" for _, p in peers),
            True,
            "; ".join(f"{n}->{p['name']}: {p['path']}, health {p['health']}" for n, p in peers),
        )
        report = run_checks(view)
        # what the lab is configured to do (enableIPv4Masquerade, default true), not what the
        # kernel happens to have: without masquerade the world cannot answer a pod address
        masq = {n: cfg.enable_ipv4_masquerade for n, cfg in node_configs(view.topology).items()}
        for r in report.results:
            expected = True
            if r.spec.name == "pod-to-external":
                node = view.pods[r.spec.src.host]["node"]
                expected = masq[node]
            part.step(
                f"{r.spec.name} {r.spec.src.host} -> {r.spec.dst.host}",
                r.status == "pass",
                expected,
                r.detail if r.status != "pass" else "passed",
            )
        src, dst = default_pair(view)
        cap = capture(view, "r1", "to-r2", 1.0, src, dst)
        part.step("capture on r1:to-r2 shows VXLAN", cap.kind == "vxlan", True, cap.sentence)
        part.data["connectivity"] = report.to_json()
        part.markdown += [*_status_md(status), _diagram(view, folder, "demo-tunnel")]
        part.markdown.append(f"Capture on the R1-R2 link during a ping: **{cap.sentence}**.")


# ---- part 2: native without routes ------------------------------------------------------------


def part_native(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """2. two-subnets, routingMode=native without BGP: R1 has no route to the other pod CIDR"""
    from podnet.verify.diagnose import Diagnoser
    from podnet.verify.probe import tcp_probe
    from podnet.verify.status import cluster_status

    with lab("two-subnets", "demo-nat", ["routingMode=native"], args) as view:
        status = cluster_status(view, None, False)["nodes"]
        src, dst = view.resolve("pod1"), view.resolve("pod2")
        res = tcp_probe(view.ns(src.host), view.ns(dst.host), str(dst.ip), timeout=2.0)
        part.step("pod1 -> pod2 across R1 and R2 (TCP)", res.ok, False, res.detail)
        diag = Diagnoser(view).diagnose(src, dst)
        drop = diag.drop
        part.step(
            "diagnose pod1 pod2 names router r1",
            drop is not None and drop.host == "r1",
            True,
            drop.reason if drop else "no drop found",
        )
        part.data["diagnose"] = diag.to_json()
        hops = "\n".join(f"    {h.host:<6} {h.action:<8} {h.kernel}" for h in diag.forward.hops)
        part.markdown += [*_status_md(status), _diagram(view, folder, "demo-native")]
        part.markdown += [
            "`podnet diagnose pod1 pod2`:",
            "",
            hops,
            "",
            f"Verdict: **{drop.reason if drop else 'ok'}**",
            "",
        ]


# ---- part 3: native with BGP ------------------------------------------------------------------


def part_bgp(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """3. two-subnets, routingMode=native + BGP: the routers learn the pod CIDRs, no encapsulation"""
    import subprocess

    from podnet.verify.capture import capture, default_pair
    from podnet.verify.probe import tcp_probe
    from podnet.verify.status import cluster_status

    with lab("two-subnets", "demo-bgp", ["routingMode=native", "bgp.enabled=true"], args) as view:
        status = cluster_status(view, None, False)["nodes"]
        src, dst = view.resolve("pod1"), view.resolve("pod2")
        for a, b in ((src, dst), (dst, src)):
            res = tcp_probe(view.ns(a.host), view.ns(b.host), str(b.ip), timeout=2.0)
            part.step(f"{a.host} -> {b.host} natively across R1 and R2 (TCP)", res.ok, True, res.detail)
        r1 = subprocess.run(
            ["ip", "netns", "exec", view.ns("r1"), "ip", "route", "show", "proto", "bird"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        learned = [line.strip() for line in r1.splitlines() if line.startswith("10.244.")]
        part.step(
            "r1 learned both pod CIDRs by BGP (proto bird)",
            any(line.startswith("10.244.2.0/24 via 172.16.0.2") for line in learned)
            and any(line.startswith("10.244.1.0/24 via 172.16.2.2") for line in learned),
            True,
            "; ".join(learned) or "no BGP routes in r1",
        )
        a, b = default_pair(view)
        cap = capture(view, "r1", "to-r2", 1.0, a, b)
        part.step("capture on r1:to-r2 shows plain pod addresses", cap.kind == "plain", True, cap.sentence)
        part.markdown += [*_status_md(status), _diagram(view, folder, "demo-bgp")]
        part.markdown += ["`ip route show proto bird` in r1:", "", *[f"    {line}" for line in learned], ""]
        part.markdown.append(f"Capture on the R1-R2 link during a ping: **{cap.sentence}**.")


# ---- part 4: throughput -----------------------------------------------------------------------


def part_perf(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """4. l2 (one segment): iperf3 host-to-host vs pod-to-pod through VXLAN, Geneve and native routing"""
    from podnet.verify.perf import combine, lab_targets, measure, options_for, plot

    tunnel_sets = ["routingMode=tunnel", "tunnelProtocol=vxlan", "autoDirectNodeRoutes=false"]
    geneve_sets = ["routingMode=tunnel", "tunnelProtocol=geneve", "autoDirectNodeRoutes=false"]
    with (
        lab("l2", "demo-l2v", tunnel_sets, args) as vx,
        lab("l2", "demo-l2g", geneve_sets, args) as gn,
        lab("l2", "demo-l2n", [], args) as nat,
    ):
        # podnet perf's method in each lab: its own host-to-host runs beside its pod-to-pod runs
        report = combine(
            {
                label: measure(lab_targets(view), args.repetitions, args.seconds, say, options_for(0))
                for label, view in (("vxlan", vx), ("geneve", gn), ("native", nat))
            }
        )
        facts = tunnel_facts(vx.ns("node1"))
        part.markdown += [
            "",
            _diagram(vx, folder, "demo-l2-vxlan"),
            "",
            _diagram(nat, folder, "demo-l2-native"),
        ]
    png = plot(report, folder / "perf.png", f"l2 lab: iperf3 medians of {args.repetitions} interleaved runs")
    doc = report.to_json()
    part.data["perf"] = doc
    part.data["tunnelFacts"] = facts
    for label in ("vxlan", "geneve", "native"):
        ratio = report.ratio(label)
        part.step(
            f"{label}/host throughput ratio measured",
            ratio > 0,
            True,
            f"{ratio:.2f} (goal >= {GOALS[label]}: {'met' if ratio >= GOALS[label] else 'NOT met'})",
        )
    part.markdown += [
        "",
        perf_table(doc),
        "",
        f"![throughput]({png.name})",
        "",
        "VXLAN device on node1: " + ", ".join(f"{k} {v}" for k, v in facts.items()),
        "",
    ]


def perf_table(doc: dict[str, Any]) -> str:
    """Seed 002's comparison as a Markdown table: path, median, ratio to host."""
    rows = ["| path | median Gbit/s | MBytes/sec | vs host | runs (Gbit/s) |", "|---|---:|---:|---:|---|"]
    for r in doc["results"]:
        mbytes = r["medianGbps"] * 1e9 / 8 / 2**20
        runs = " ".join(f"{x:.2f}" for x in r["runsGbps"])
        rows.append(
            f"| {r['label']} | {r['medianGbps']:.2f} | {mbytes:.0f} | {r['ratioToHost']:.0%} | {runs} |"
        )
    return "\n".join(rows)


def tunnel_facts(node_ns: str) -> dict[str, str]:
    """Offload and MTU facts of the node's VXLAN and underlay devices (``ethtool -k``, ``ip -d``)."""
    import subprocess

    facts: dict[str, str] = {}
    for dev in ("podnet_vxlan", "eth0"):
        res = subprocess.run(
            ["ip", "netns", "exec", node_ns, "ethtool", "-k", dev], capture_output=True, text=True, timeout=5
        )
        for line in res.stdout.splitlines():
            key, _, value = line.strip().partition(": ")
            if key in (
                "generic-receive-offload",
                "tx-udp_tnl-segmentation",
                "rx-udp-gro-forwarding",
                "tcp-segmentation-offload",
            ):
                facts[f"{dev} {key}"] = value.split()[0] if value else "?"
    return facts


# ---- report -----------------------------------------------------------------------------------


def _diagram(view: Any, folder: Path, name: str) -> str:
    from podnet.lab.diagram import gather, render, to_dot

    try:
        path = render(to_dot(gather(view)), folder / f"{name}.svg")
    except (RuntimeError, OSError) as e:
        return f"(diagram not drawn: {e})"
    return f"![{view.name}]({path.name})"


def _status_md(status: dict[str, Any]) -> list[str]:
    rows = [
        "| node | routing | MTU (device/route) | peer | kernel path | health |",
        "|---|---|---|---|---|---|",
    ]
    for n, s in status.items():
        mtu = s.get("mtu") or {}
        for p in s.get("peers", []):
            rows.append(
                f"| {n} | {s['routing']['summary']} | {mtu.get('kernelDevice')}/{mtu.get('route')} | "
                f"{p['name']} | {p['path']} | {p['health']} |"
            )
    return ["", *rows, ""]


def write_report(folder: Path, parts: list[Part], datastore: str = "etcd") -> Path:
    path = folder / "README.md"
    lines = [
        f"# podnet demo - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Datastore: {datastore}.",
        "",
    ]
    for p in parts:
        lines += [f"## {p.title}", "", "| step | result | expected | detail |", "|---|---|---|---|"]
        for s in p.steps:
            mark = "" if s.as_expected else " **UNEXPECTED**"
            lines.append(
                f"| {s.title} | {'yes' if s.ok else 'no'}{mark} | {'yes' if s.expected else 'no'} | "
                f"{_md(s.detail)} |"
            )
        lines += [*p.markdown, ""]
    path.write_text("\n".join(lines) + "\n")
    (folder / "demo.json").write_text(json.dumps({p.title: p.data for p in parts}, indent=2))
    return path.resolve()


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
