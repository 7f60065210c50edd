"""``podnet bgp peers`` and ``podnet bgp routes``: BGP sessions and routes of nodes and routers.

Nodes answer through their agent's status document (the ``bgp`` section); a cluster view's BGP
routers through ``birdc`` on their BIRD control socket (``podnet.bgp.birdc`` reads the answers).
Without ``--lab`` the local agent is asked (a ``HostView``); with ``--lab NAME`` every node and
router of the lab, or one of them with ``--node``/``--router``. A verification command, so it
lives here and not in ``podnet.bgp``, which the agent runs: the speaker never imports its readers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from podnet.agent.api import request
from podnet.bgp.birdc import parse_protocols, parse_routes
from podnet.statusdoc.bgp import BgpStatus
from podnet.statusdoc.document import StatusDocument
from podnet.verify.hostview import DEFAULT_AGENT_SOCKET, HostView
from podnet.verify.view import BgpRouter, ClusterView, LabOpener, NoAgentError, ViewError

PEER_COLUMNS = ("host", "role", "peer", "peerAddress", "peerASN", "state", "uptime", "sent", "received")
ROUTE_COLUMNS = ("host", "role", "direction", "prefix", "peer", "nexthop")


def add_parser(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
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
        p.add_argument(
            "--socket", type=Path, default=DEFAULT_AGENT_SOCKET, help="the local agent's API socket"
        )
        p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    peers.set_defaults(func=partial(cmd_peers, open_lab=open_lab))
    routes.set_defaults(func=partial(cmd_routes, open_lab=open_lab))


# ---------------------------------------------------------------------------------------------
# collecting rows (node rows from a status document are pure, for tests)


def node_peer_rows(host: str, bgp: BgpStatus | Mapping[str, Any]) -> list[dict[str, Any]]:
    """A node's sessions as table rows (from its ``bgp`` section, or that section's JSON)."""
    bgp = bgp if isinstance(bgp, BgpStatus) else BgpStatus.from_json(bgp)
    return [
        {
            "host": host, "role": "node", "peer": f"AS{p.peer_asn}",
            "peerAddress": p.peer_address, "peerASN": p.peer_asn, "state": p.state,
            "uptime": p.uptime, "sent": p.sent, "received": len(p.received_prefixes),
        }
        for p in bgp.peers
    ]  # fmt: skip


def _same_family(prefix: str, address: str) -> bool:
    return (":" in prefix) == (":" in address)


def node_route_rows(
    host: str, bgp: BgpStatus | Mapping[str, Any], direction: str | None
) -> list[dict[str, Any]]:
    """A node's routes, advertised to each established session and received from each."""
    bgp = bgp if isinstance(bgp, BgpStatus) else BgpStatus.from_json(bgp)
    rows: list[dict[str, Any]] = []
    for p in bgp.peers:
        if direction in (None, "advertised") and p.established:
            rows += [
                {"host": host, "role": "node", "direction": "advertised", "prefix": prefix,
                 "peer": p.peer_address, "nexthop": "self"}
                for prefix in bgp.advertised
                if _same_family(prefix, p.peer_address)  # a session carries its own family
            ]  # fmt: skip
        if direction in (None, "received"):
            rows += [
                {"host": host, "role": "node", "direction": "received", "prefix": prefix,
                 "peer": p.peer_address, "nexthop": ""}
                for prefix in p.received_prefixes
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


def _router_rows(router: BgpRouter, what: str, direction: str | None) -> list[dict[str, Any]]:
    sessions = parse_protocols(router.birdc("show", "protocols", "all"))
    if what == "peers":
        return router_peer_rows(router.name, sessions)
    names = {s["name"]: s.get("description") or s["name"] for s in sessions}
    rows: list[dict[str, Any]] = []
    if direction in (None, "received"):
        for r in parse_routes(router.birdc("show", "route")):
            if r["protocol"] in names:
                rows.append({"host": router.name, "role": "router", "direction": "received",
                             "prefix": r["prefix"], "peer": names[r["protocol"]],
                             "nexthop": ",".join(r["via"])})  # fmt: skip
    if direction in (None, "advertised"):
        for proto, label in names.items():
            for r in parse_routes(router.birdc("show", "route", "export", proto)):
                rows.append({"host": router.name, "role": "router", "direction": "advertised",
                             "prefix": r["prefix"], "peer": label, "nexthop": ""})  # fmt: skip
    return rows


def _node_bgp(view: ClusterView, node: str) -> BgpStatus:
    """The ``bgp`` section of an agent's status (one JSON request over its unix socket)."""
    path = view.agent_socket(node)
    try:
        doc = request(path, {"op": "status"}, timeout=5.0)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        if view.lab is not None:
            raise
        raise NoAgentError(f"no podnet agent at {path}: start podnet agent, or use --lab NAME") from e
    return StatusDocument.from_json(doc).bgp


def speakers(view: ClusterView) -> tuple[list[str], dict[str, BgpRouter]]:
    """(nodes with an agent socket, routers with a BIRD control socket) of a lab."""
    nodes = sorted(n for n in view.nodes if view.agent_socket(n).exists())
    return nodes, {r.name: r for r in view.bgp_routers()}


def collect(
    view: ClusterView, args: argparse.Namespace, what: str, direction: str | None = None
) -> list[dict[str, Any]]:
    """The rows of ``what`` (peers, routes): the host's agent, or the lab's nodes and routers."""
    if view.lab is None:
        if args.node or args.router:
            raise ValueError("--node and --router need --lab NAME")
        (node,) = view.nodes
        bgp = _node_bgp(view, node)
        return node_peer_rows(node, bgp) if what == "peers" else node_route_rows(node, bgp, direction)
    nodes, routers = speakers(view)
    if not nodes and not routers:
        raise ValueError(
            f"lab {view.lab} is not up (no agents, no BGP routers); podnet lab list shows the labs"
        )
    if args.node or args.router:
        name = args.node or args.router
        known = nodes if args.node else sorted(routers)
        if name not in known:
            kind = "node with a running agent" if args.node else "router running BIRD"
            raise ValueError(
                f"{name} is not a {kind} in lab {view.lab} (known: {', '.join(known) or 'none'})"
            )
        nodes, routers = ([name], {}) if args.node else ([], {name: routers[name]})
    rows: list[dict[str, Any]] = []
    for node in nodes:
        bgp = _node_bgp(view, node)
        rows += node_peer_rows(node, bgp) if what == "peers" else node_route_rows(node, bgp, direction)
    for router in routers.values():
        rows += _router_rows(router, what, direction)
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


def bgp_view(args: argparse.Namespace, open_lab: LabOpener) -> ClusterView:
    """``--lab``: the lab; without it this host's agent at ``--socket``."""
    return open_lab(args.lab) if args.lab else HostView(args.socket)


def _run(args: argparse.Namespace, open_lab: LabOpener, what: str, direction: str | None) -> int:
    try:
        with bgp_view(args, open_lab) as view:
            rows = collect(view, args, what, direction)
    except NoAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, ViewError) as exc:
        print(f"podnet bgp {what}: {exc}", file=sys.stderr)
        return 1
    _emit(args, rows, PEER_COLUMNS if what == "peers" else ROUTE_COLUMNS)
    return 0


def cmd_peers(args: argparse.Namespace, open_lab: LabOpener) -> int:
    return _run(args, open_lab, "peers", None)


def cmd_routes(args: argparse.Namespace, open_lab: LabOpener) -> int:
    direction = "advertised" if args.advertised else "received" if args.received else None
    return _run(args, open_lab, "routes", direction)
