"""``podnet status | connectivity test | perf | capture | diagnose``: argument parsing and output.

Each command prints a table for people by default and a JSON document with ``-o json``. The
work happens in the sibling modules; this one parses, picks the cluster view, and formats. The
view: ``--lab L`` is the lab adapter's (``open_lab``, passed in by ``podnet.cli``); without it,
``status`` reads this host's agent when it runs one, and every command else takes the only lab
that is up. Connectivity, perf, capture and diagnose walk paths through a lab's hosts; on a real
host they say what to use instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from podnet.statusdoc.ipam import FailedAdd
from podnet.verify.hostview import DEFAULT_AGENT_SOCKET, HostView
from podnet.verify.render import print_diagnosis, print_perf_table, print_status
from podnet.verify.view import (
    ClusterView,
    LabOpener,
    NoAgentError,
    NoLabUpError,
    PathView,
    ViewError,
    pair_families,
    resolve_pair,
)

ON_A_REAL_HOST = {
    "connectivity test": "`podnet status` shows each peer's kernel path and a ping health",
    "perf": "run iperf3 between two hosts and between two pods",
    "capture": "run tcpdump -i IF on the host",
    "diagnose": "`ip route get DST` shows the first hop and `podnet status` each peer's path",
}


def add_parsers(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
    st = sub.add_parser("status", help="agent, routing, MTU, IPAM and every peer as the kernel has them")
    _lab_args(st)
    st.add_argument("--node", help="only this node of the lab")
    st.add_argument("--verbose", action="store_true", help="add allocated addresses and owned kernel objects")
    st.add_argument(
        "--agent-socket",
        default=None,
        help="a real host's agent socket (default /var/run/podnet/agent.sock when no --lab is given)",
    )
    st.set_defaults(func=partial(cmd_status, open_lab=open_lab))

    from podnet.verify import ipam

    ipam.add_parser(sub, partial(cmd_ipam, open_lab=open_lab))

    conn = sub.add_parser("connectivity", help="connectivity checks over the lab's datapath")
    csub = conn.add_subparsers(dest="conn_cmd", required=True)
    test = csub.add_parser("test", help="pod/node/external reachability and the full-size DF packet")
    _lab_args(test)
    test.add_argument("--deadline", type=float, default=90.0, help="seconds for the whole run (default 90)")
    test.set_defaults(func=partial(cmd_connectivity, open_lab=open_lab))

    perf = sub.add_parser("perf", help="iperf3 host-to-host vs pod-to-pod across nodes (medians, ratio)")
    _lab_args(perf)
    perf.add_argument("--repetitions", type=int, default=5, help="interleaved runs per target (default 5)")
    perf.add_argument("--seconds", type=int, default=3, help="iperf3 -t per run (default 3)")
    perf.add_argument("--plot", help="write a PNG bar chart here")
    perf.add_argument("--family", type=int, choices=(4, 6), default=4, help="measure over IPv4 or IPv6")
    perf.add_argument(
        "--parallel", type=int, default=0, metavar="N", help="also N streams at once (iperf3 -P N)"
    )
    perf.set_defaults(func=partial(cmd_perf, open_lab=open_lab))

    cap = sub.add_parser("capture", help="tcpdump on an underlay link during a pod-to-pod probe")
    _lab_args(cap)
    cap.add_argument("--on", required=True, metavar="HOST:IF", help="where to capture, e.g. r1:to-r2")
    cap.add_argument("--seconds", type=float, default=2.0, help="probe duration (default 2)")
    cap.add_argument("--from", dest="src", help="probe source (default: a pod on the first node)")
    cap.add_argument("--to", dest="dst", help="probe destination (default: a pod on the second node)")
    cap.add_argument("--family", type=int, choices=(4, 6), help="probe the pods' IPv4 or IPv6 addresses")
    cap.set_defaults(func=partial(cmd_capture, open_lab=open_lab))

    dg = sub.add_parser(
        "diagnose",
        help="walk the path SRC -> DST hop by hop, follow real probes along it, and say where it drops",
    )
    dg.add_argument("src", help="pod, node, host or address")
    dg.add_argument("dst", help="pod, node, host or address")
    _lab_args(dg)
    dg.add_argument("--size", type=int, help="packet size to check (default: the route MTU at SRC)")
    dg.add_argument(
        "--family", type=int, choices=(4, 6), help="by the IPv4 or IPv6 addresses of pods and hosts"
    )
    dg.add_argument(
        "--no-probe",
        action="store_true",
        help="only read the tables: send no probe (the verdict then cannot say the path works)",
    )
    dg.set_defaults(func=partial(cmd_diagnose, open_lab=open_lab))


def _lab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", help="lab name (default: the only lab that is up)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def _emit(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2))


def status_view(args: argparse.Namespace, open_lab: LabOpener) -> ClusterView:
    """``--agent-socket``: that host agent; ``--lab``: the lab; neither: this host's agent when
    its socket exists, else the only lab that is up."""
    if args.agent_socket is not None or (not args.lab and DEFAULT_AGENT_SOCKET.exists()):
        return HostView(Path(args.agent_socket or DEFAULT_AGENT_SOCKET))
    return open_lab(args.lab)


def path_view(args: argparse.Namespace, open_lab: LabOpener, command: str) -> PathView:
    """The lab named by ``--lab``, else the only lab that is up; with none up, the ViewError also
    says what does the job on a real host."""
    try:
        return open_lab(args.lab)
    except NoLabUpError as e:
        raise NoLabUpError(f"{e}; on a real host, {ON_A_REAL_HOST[command]}") from None


# ---- status --------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.status import cluster_report

    try:
        with status_view(args, open_lab) as view:
            report = cluster_report(view, args.node, args.verbose)
    except NoAgentError as e:
        return _fail(str(e), 1)
    except (ViewError, KeyError) as e:
        return _fail(str(e))
    if args.output == "json":
        _emit(args, report.to_json())
    else:
        print_status(report)
    return 0 if report.ready else 1


def cmd_connectivity(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.connectivity import CheckResult, run_checks

    def show(r: CheckResult) -> None:
        if args.output == "table":
            mark = {"pass": "ok  ", "fail": "FAIL", "skipped": "skip"}[r.status]
            size = f" [{r.spec.size} B, DF]" if r.spec.size else ""
            print(f"[{mark}] {r.spec.name:<24} {r.spec.src.describe()} -> {r.spec.dst.describe()}{size}")
            if r.status == "fail":
                print(f"         {r.detail}")
                if r.drop is not None and r.drop.fix:
                    print(f"         fix: {r.drop.fix}")

    try:
        with path_view(args, open_lab, "connectivity test") as view:
            report = run_checks(view, args.deadline, on_result=show)
    except ViewError as e:
        return _fail(str(e))
    doc = report.to_json()
    if args.output == "json":
        _emit(args, doc)
    else:
        print(f"\n{doc['passed']} passed, {doc['failed']} failed, {doc['skipped']} skipped")
    return 0 if report.ok else 1


# ---- perf ----------------------------------------------------------------------------------------


def cmd_perf(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.perf import PerfError, lab_targets, measure, options_for, plot

    progress = (lambda m: print(f"  - {m}", file=sys.stderr)) if args.output == "table" else (lambda _m: None)
    try:
        with path_view(args, open_lab, "perf") as view:
            opts = options_for(args.parallel)
            report = measure(lab_targets(view, args.family), args.repetitions, args.seconds, progress, opts)
            title = f"lab {view.name}: iperf3 medians of {args.repetitions} runs"
    except (ViewError, PerfError) as e:
        return _fail(str(e), 1)
    doc = report.to_json()
    if args.plot:
        doc["plot"] = str(plot(report, Path(args.plot), title))
    if args.output == "json":
        _emit(args, doc)
    else:
        print_perf_table(doc)
        if args.plot:
            print(f"\nplot: {doc['plot']}")
    return 0


# ---- capture -------------------------------------------------------------------------------------


def cmd_capture(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.capture import capture, default_pair

    host, sep, iface = args.on.partition(":")
    if not sep or not host or not iface:
        return _fail(f"--on {args.on!r}: expected HOST:IF, e.g. r1:to-r2")
    try:
        with path_view(args, open_lab, "capture") as view:
            src, dst = default_pair(view, args.family)
            if args.src or args.dst:  # a given address decides the family, unless --family does
                src_t, dst_t = args.src or src.name, args.dst or dst.name
                src, dst = resolve_pair(view, src_t, dst_t, args.family)
            result = capture(view, host, iface, args.seconds, src, dst)
    except ViewError as e:
        return _fail(str(e))
    if args.output == "json":
        _emit(args, result.to_json())
    else:
        print(
            f"on {host}:{iface}, {src.describe()} -> {dst.describe()}: {result.sentence} "
            f"({result.packets} packets captured)"
        )
    return 0 if result.kind != "none" else 1


# ---- diagnose ------------------------------------------------------------------------------------


def cmd_ipam(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.ipam import run_ipam

    try:
        return run_ipam(args, status_view(args, open_lab))
    except ViewError as e:
        return _fail(str(e))


def cmd_diagnose(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.diagnose import Diagnoser, families_json

    try:
        with path_view(args, open_lab, "diagnose") as view:
            unstarted = _never_started(view, args.src, args.dst)
            if unstarted is not None:
                return _print_unstarted(args, *unstarted)
            diagnoser = Diagnoser(view)
            diags = [
                diagnoser.diagnose(*resolve_pair(view, args.src, args.dst, family), args.size,
                                   probe=not args.no_probe)
                for family in pair_families(view, args.src, args.dst, args.family)
            ]  # fmt: skip
    except ViewError as e:
        return _fail(str(e))
    doc = families_json(diags)
    if args.output == "json":
        _emit(args, doc)
    elif len(diags) == 1:
        print_diagnosis(doc)
    else:
        for family in doc["families"]:
            print(f"IPv{family['family']}:")
            print_diagnosis(family)
            print()
        statuses = ", ".join(f"IPv{f['family']} {f['status']}" for f in doc["families"])
        print(f"both families: {statuses}")
    return 0 if doc["ok"] else 1


def _never_started(view: PathView, *targets: str) -> tuple[str, str, FailedAdd] | None:
    """A target that is no pod the cluster knows but whose CNI ADD failed: (pod, node, failure)."""
    from podnet.verify.ipam import failed_start

    for target in targets:
        if target in view.pods:
            continue
        try:
            view.resolve(target)
            continue
        except ViewError:
            pass
        found = failed_start(view, target)
        if found is not None:
            return target, found[0], found[1]
    return None


def _print_unstarted(args: argparse.Namespace, pod: str, node: str, failure: FailedAdd) -> int:
    """``diagnose`` for a pod that never got an address: the node, the CNI error (which names the
    pool or the node's address pool), and what to do."""
    details = failure.details or ""
    fix = (
        "give the pool more CIDRs (or the node more addresses), or delete pods that hold them; "
        "`podnet ipam` shows each pool's use per node"
        if failure.code == 100
        else "see the agent's log on that node"
    )
    doc = {
        "src": args.src,
        "dst": args.dst,
        "verdict": {
            "host": node,
            "reason": f"pod {pod} never started: CNI ADD failed on node {node} with code "
            f"{failure.code} ({failure.msg}): {details}",
            "fix": fix,
        },
    }
    if args.output == "json":
        _emit(args, doc)
    else:
        print(f"verdict: {doc['verdict']['reason']}")
        print(f"fix: {fix}")
    return 1
