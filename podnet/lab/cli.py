"""``podnet lab ...``: up, down, list, exec. Output for people by default, ``-o json`` for scripts."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from podnet.lab import state as st
from podnet.lab.build import LabError
from podnet.lab.topology import Topology, TopologyError, load_topology


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lab = sub.add_parser("lab", help="build whole clusters out of network namespaces on this machine")
    lsub = lab.add_subparsers(dest="lab_cmd", required=True)

    up = lsub.add_parser("up", help="bring a lab up from a topology file (idempotent)")
    up.add_argument(
        "file", help="topology YAML (see examples/), or a lab that is up: restart what of it is down"
    )
    up.add_argument("-o", "--output", choices=["table", "json"], default="table")
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a cluster setting, e.g. --set routingMode=native",
    )
    up.add_argument(
        "--underlay-only",
        action="store_true",
        help="only the namespaces, routers and etcd: no operator, agents or pods",
    )
    up.set_defaults(func=cmd_up)

    down = lsub.add_parser("down", help="remove a lab and everything it made")
    down.add_argument("name", nargs="?", help="lab name")
    down.add_argument("--all", action="store_true", help="every lab, and leftovers of crashed ones")
    down.add_argument("-o", "--output", choices=["table", "json"], default="table")
    down.set_defaults(func=cmd_down)

    ls = lsub.add_parser("list", help="labs on this machine")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(func=cmd_list)

    ex = lsub.add_parser("exec", help="run a command inside a lab host's namespace")
    ex.add_argument("name", help="lab name")
    ex.add_argument("host", help="host, router, pod or 'cp'")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ex.set_defaults(func=cmd_exec)

    dg = lsub.add_parser("diagram", help="a Graphviz picture of a running lab (segments, nodes, pod paths)")
    dg.add_argument("name", help="lab name")
    dg.add_argument("-o", "--output", default=None, metavar="FILE", help="FILE.svg, .png or .dot "
                    "(default: <name>.svg in the current directory)")  # fmt: skip
    dg.set_defaults(func=cmd_diagram)


def _with_overrides(topo: Topology, pairs: list[str]) -> Topology:
    from podnet.lab.overrides import apply_overrides

    return apply_overrides(topo, pairs) if pairs else topo


def _topology_to_bring_up(arg: str, sets: list[str]) -> tuple[Topology, list[str]]:
    """A topology file (or built-in example), or the name of a lab that is up: that lab as it was
    made (its file, its name, its --set overrides), so ``lab up <lab>`` restarts what is down."""
    state = None if Path(arg).exists() else st.LabState.load(arg)
    if state is None:
        return _with_overrides(load_topology(arg), sets), list(sets)
    topo = load_topology(state.source)
    settings = state.info.get("cluster")
    cluster = dict(settings) if isinstance(settings, dict) else topo.cluster
    topo = dataclasses.replace(topo, name=arg, cluster=cluster)
    return _with_overrides(topo, sets), [*(state.info.get("overrides") or []), *sets]


def cmd_up(args: argparse.Namespace) -> int:
    from podnet.lab.run import bring_up, summary_rows

    try:
        topo, overrides = _topology_to_bring_up(args.file, args.set)
    except TopologyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = _progress(args.output == "table")
    try:
        report = bring_up(topo, progress=progress, cluster=not args.underlay_only, overrides=overrides)
    except (LabError, TopologyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        after = "the lab was removed" if st.LabState.load(topo.name) is None else "the lab is still up"
        print(f"error: {type(e).__name__}: {e}; {after} (see podnet lab list)", file=sys.stderr)
        return 1
    rows = summary_rows(topo)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "lab": topo.name,
                    "changes": report.changes,
                    "seconds": round(report.seconds, 3),
                    "hosts": rows,
                },
                indent=2,
            )
        )
        return 0
    verb = "is up already: nothing to change" if report.changes == 0 else f"is up ({report.changes} changes)"
    print(f"lab {topo.name} {verb} in {report.seconds:.1f}s")
    _print_table(rows, ["host", "role", "namespace", "addresses", "gateway", "extra"])
    print(f"\nnext: podnet lab exec {topo.name} <host> -- ip route    |    podnet lab down {topo.name}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from podnet.lab.run import bring_down, bring_down_all
    from podnet.lab.teardown import lab_exists

    if not args.all and not args.name:
        print("error: name a lab (podnet lab list) or use --all", file=sys.stderr)
        return 2
    if not args.all and not lab_exists(args.name):
        print(f"error: no lab named {args.name} (podnet lab list)", file=sys.stderr)
        return 1
    reports = bring_down_all() if args.all else [bring_down(args.name)]
    if args.output == "json":
        print(json.dumps([r.__dict__ for r in reports], indent=2))
        return 0
    if not reports:
        print("no labs found")
    for r in reports:
        print(
            f"lab {r.lab}: removed {len(r.namespaces)} namespaces, stopped {len(set(r.processes))} processes"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for lab in st.known_labs():
        state = st.LabState.load(lab)
        if state is None:
            if st.LabState.is_corrupt(lab):
                rows.append(
                    {
                        "name": lab,
                        "status": "corrupt state",
                        "namespaces": "?",
                        "processes": "?",
                        "topology": "",
                    }
                )
            continue
        alive = sum(1 for p in state.processes if p.running())
        present = sum(1 for n in state.namespaces if os.path.exists(f"/run/netns/{n}"))
        rows.append(
            {
                "name": lab,
                "status": state.status,
                "namespaces": present,
                "processes": f"{alive}/{len(state.processes)}",
                "topology": state.source,
            }
        )
    known = {st.ns_name(r["name"], "") for r in rows}
    orphans = [n for n in _listed_ns() if not any(n.startswith(k) for k in known)]
    if args.output == "json":
        print(json.dumps({"labs": rows, "orphanNamespaces": orphans}, indent=2))
        return 0
    if rows:
        _print_table(rows, ["name", "status", "namespaces", "processes", "topology"])
    else:
        print("no labs are up")
    if orphans:
        print(
            f"\nleftover namespaces without a lab: {', '.join(orphans)}\n  remove them: podnet lab down --all"
        )
    return 0


def _listed_ns() -> list[str]:
    from podnet.util import netns

    return netns.listed(st.NS_PREFIX)


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("error: give a command after --, e.g. podnet lab exec LAB node1 -- ip route", file=sys.stderr)
        return 2
    ns = st.ns_name(args.name, args.host)
    if not os.path.exists(f"/run/netns/{ns}"):
        state = st.LabState.load(args.name)
        hosts = ", ".join(state.info.get("hosts", []) + state.info.get("pods", [])) if state else ""
        hint = f"hosts of lab {args.name}: {hosts}" if state else "see podnet lab list"
        print(f"error: no namespace {ns} ({hint})", file=sys.stderr)
        return 2
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])
    return 127  # not reached


def cmd_diagram(args: argparse.Namespace) -> int:
    from pathlib import Path

    from podnet.lab.diagram import gather, render, to_dot
    from podnet.lab.view import LabView, LabViewError

    try:
        with LabView(args.name) as view:
            source = to_dot(gather(view))
        path = render(source, Path(args.output or f"{args.name}.svg"))
    except (LabViewError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _progress(enabled: bool) -> Any:
    if not enabled:
        return lambda _msg: None

    def show(msg: str) -> None:
        print(f"  - {msg}", file=sys.stderr, flush=True)

    return show


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c.upper())
    for r in rows:
        table.add_row(*(Text(str(r.get(c, ""))) for c in columns))  # plain text: "[fd00::1]" is no markup
    Console(width=max(120, os.get_terminal_size().columns if sys.stdout.isatty() else 160)).print(table)
