"""``podnet bgp peers`` and ``podnet bgp routes``: BGP sessions and routes of nodes and lab routers.

Nodes answer through their agent's status document (the ``bgp`` section); lab routers through
``birdc`` on their BIRD control socket. Without ``--lab`` the local agent is asked; with
``--lab NAME`` every node and router of the lab, or one of them with ``--node``/``--router``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PEER_COLUMNS = ("host", "role", "peer", "peerAddress", "peerASN", "state", "uptime", "sent", "received")
ROUTE_COLUMNS = ("host", "role", "direction", "prefix", "peer", "nexthop")
DEFAULT_SOCKET = Path("/var/run/podnet/agent.sock")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bgp = sub.add_parser("bgp", help="BGP sessions and routes of nodes and lab routers")
    bsub = bgp.add_subparsers(dest="bgp_cmd", required=True)
    peers = bsub.add_parser("peers", help="BGP sessions: state, uptime, prefixes sent/received")
    routes = bsub.add_parser("routes", help="BGP routes advertised and received")
    which = routes.add_mutually_exclusive_group()
    which.add_argument("--advertised", action="store_true", help="only routes sent to peers")
    which.add_argument("--received", action="store_true", help="only routes learnt from peers")
    for p in (peers, routes):
        p.add_argument("--lab", help="a lab's nodes and routers instead of the local agent")
        target = p.add_mutually_exclusive_group()
        target.add_argument("--node", help="one node of the lab")
        target.add_argument("--router", help="one router of the lab (its BIRD)")
        p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="the local agent's API socket")
        p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    peers.set_defaults(func=cmd_peers)
    routes.set_defaults(func=cmd_routes)


# ---------------------------------------------------------------------------------------------
# collecting rows (node rows from a status document are pure, for tests)


def node_peer_rows(host: str, bgp: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "host": host, "role": "node", "peer": f"AS{p.get('peerASN')}",
            "peerAddress": p.get("peerAddress"), "peerASN": p.get("peerASN"), "state": p.get("state"),
            "uptime": p.get("uptime", 0.0), "sent": p.get("sent", 0), "received": p.get("received", 0),
        }
        for p in bgp.get("peers", [])
    ]  # fmt: skip


def node_route_rows(host: str, bgp: dict[str, Any], direction: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in bgp.get("peers", []):
        if direction in (None, "advertised") and p.get("state") == "established":
            rows += [
                {"host": host, "role": "node", "direction": "advertised", "prefix": prefix,
                 "peer": p.get("peerAddress"), "nexthop": "self"}
                for prefix in bgp.get("advertised", [])
            ]  # fmt: skip
        if direction in (None, "received"):
            rows += [
                {"host": host, "role": "node", "direction": "received", "prefix": prefix,
                 "peer": p.get("peerAddress"), "nexthop": ""}
                for prefix in p.get("receivedPrefixes", [])
            ]  # fmt: skip
    return rows


def router_peer_rows(host: str, sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "host": host, "role": "router", "peer": s.get("description") or s["name"],
            "peerAddress": s.get("peerAddress"), "peerASN": s.get("peerASN"), "state": s.get("state"),
            "uptime": s.get("uptime", 0.0), "sent": s.get("sent", 0), "received": s.get("received", 0),
        }
        for s in sessions
    ]  # fmt: skip


def _router_rows(lab: str, router: str, what: str, direction: str | None) -> list[dict[str, Any]]:
    from podnet.bgp.birdc import parse_protocols, parse_routes
    from podnet.lab.bird import birdc

    sessions = parse_protocols(birdc(lab, router, "show", "protocols", "all"))
    if what == "peers":
        return router_peer_rows(router, sessions)
    names = {s["name"]: s.get("description") or s["name"] for s in sessions}
    rows: list[dict[str, Any]] = []
    if direction in (None, "received"):
        for r in parse_routes(birdc(lab, router, "show", "route")):
            if r["protocol"] in names:
                rows.append({"host": router, "role": "router", "direction": "received", "prefix": r["prefix"],
                             "peer": names[r["protocol"]], "nexthop": ",".join(r["via"])})  # fmt: skip
    if direction in (None, "advertised"):
        for proto, label in names.items():
            for r in parse_routes(birdc(lab, router, "show", "route", "export", proto)):
                rows.append({"host": router, "role": "router", "direction": "advertised",
                             "prefix": r["prefix"], "peer": label, "nexthop": ""})  # fmt: skip
    return rows


class NoAgentError(RuntimeError):
    """No agent answers on the local socket (the message says what to start or pass)."""


def _node_bgp(lab: str | None, node: str | None, socket_path: Path) -> dict[str, Any]:
    """The ``bgp`` section of an agent's status (one JSON request over its unix socket)."""
    from podnet.agent.api import request
    from podnet.lab.cluster import agent_socket

    path = agent_socket(lab, node) if lab and node else socket_path
    try:
        doc = request(path, {"op": "status"}, timeout=5.0)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        if lab:
            raise
        raise NoAgentError(f"no podnet agent at {path}: start podnet agent, or use --lab NAME") from e
    return dict(doc.get("bgp") or {})


def lab_hosts(lab: str) -> tuple[list[str], list[str]]:
    """(nodes with an agent socket, routers with a BIRD control socket) of a running lab."""
    from podnet.lab import state as st
    from podnet.lab.bird import bird_dir

    nodes_dir = st.lab_dir(lab) / "nodes"
    nodes = (
        sorted(p.name for p in nodes_dir.iterdir() if (p / "agent.sock").exists())
        if nodes_dir.is_dir()
        else []
    )
    routers = sorted(p.stem for p in bird_dir(lab).glob("*.ctl"))
    return nodes, routers


def collect(args: argparse.Namespace, what: str, direction: str | None = None) -> list[dict[str, Any]]:
    if not args.lab:
        if args.node or args.router:
            raise ValueError("--node and --router need --lab NAME")
        bgp = _node_bgp(None, None, args.socket)
        return node_peer_rows("local", bgp) if what == "peers" else node_route_rows("local", bgp, direction)
    nodes, routers = lab_hosts(args.lab)
    if not nodes and not routers:
        raise ValueError(
            f"lab {args.lab} is not up (no agents, no BGP routers); podnet lab list shows the labs"
        )
    if args.node or args.router:
        name = args.node or args.router
        known = nodes if args.node else routers
        if name not in known:
            kind = "node with a running agent" if args.node else "router running BIRD"
            raise ValueError(
                f"{name} is not a {kind} in lab {args.lab} (known: {', '.join(known) or 'none'})"
            )
        nodes, routers = ([name], []) if args.node else ([], [name])
    rows: list[dict[str, Any]] = []
    for node in nodes:
        bgp = _node_bgp(args.lab, node, args.socket)
        rows += node_peer_rows(node, bgp) if what == "peers" else node_route_rows(node, bgp, direction)
    for router in routers:
        rows += _router_rows(args.lab, router, what, direction)
    return rows


def render_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(
            render_table(rows, columns)
            if rows
            else "no BGP sessions"
            if columns == PEER_COLUMNS
            else "no routes"
        )


def _run(args: argparse.Namespace, what: str, direction: str | None) -> int:
    from podnet.lab.build import LabError

    try:
        rows = collect(args, what, direction)
    except NoAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, LabError) as exc:
        print(f"podnet bgp {what}: {exc}", file=sys.stderr)
        return 1
    _emit(args, rows, PEER_COLUMNS if what == "peers" else ROUTE_COLUMNS)
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    return _run(args, "peers", None)


def cmd_routes(args: argparse.Namespace) -> int:
    direction = "advertised" if args.advertised else "received" if args.received else None
    return _run(args, "routes", direction)
