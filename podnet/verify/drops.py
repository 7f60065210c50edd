"""``podnet drops [--follow]``: the packets podnet dropped, one line each, as Hubble shows drops.

Each agent keeps its node's last drop events (``podnet.agent.drops``: the pod guard's drops with
their reason, interfaces, addresses and ports); this command fetches them over the agent API
(``op: drops``) from every node of a lab (``--lab``, ``--node``) or from this host's agent, and
with ``--follow`` keeps polling for new ones (until Ctrl-C or ``--seconds``). ``-o json``
prints one JSON object per event (with its node), for tools.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from functools import partial
from pathlib import Path

from podnet.agent.api import request
from podnet.statusdoc.answer import ApiError
from podnet.statusdoc.drops import DropEvent, DropEvents
from podnet.verify.hostview import DEFAULT_AGENT_SOCKET, HostView
from podnet.verify.view import ClusterView, LabOpener, NoAgentError, ViewError

POLL = 0.5  # seconds between polls with --follow
# what each reason means, and what to do (the guard's counters, podnet.datapath.guard)
REASONS = {
    "spoofed": "a pod sent from an address it was not given (source verification)",
    "tunnel_foreign": "a tunnel packet from an address that is no peer node",
    "pod_to_control_plane": "a pod tried to reach the store (etcd / API server)",
    "pod_to_bgp": "a pod tried to reach BGP (TCP 179)",
    "pod_to_tunnel": "a pod sent to a tunnel protocol's port",
    "pod_to_node": "a pod tried a port of its node that is not open (podGuard.nodePorts)",
    "policy-denied-ingress": "a NetworkPolicy isolates the destination pod and none of its rules allows this",
    "policy-denied-egress": "a NetworkPolicy isolates the source pod and none of its rules allows this",
}


def add_parser(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("drops", help="packets podnet dropped, with interface, addresses and reason")
    p.add_argument("--lab", help="a lab's nodes instead of the local agent")
    p.add_argument("--node", help="one node of the lab")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new drops")
    p.add_argument("--seconds", type=float, help="with --follow: stop after this many seconds")
    p.add_argument("--socket", type=Path, default=DEFAULT_AGENT_SOCKET, help="the local agent's API socket")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=partial(cmd_drops, open_lab=open_lab))


def fetch(view: ClusterView, node: str, since: int) -> DropEvents:
    """One node's events after ``since`` (the agent's answer to ``op: drops``)."""
    path = view.agent_socket(node)
    try:
        answer = request(path, {"op": "drops", "since": since}, timeout=5.0)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        if view.lab is not None:
            raise ViewError(f"the agent of {node} does not answer at {path}: is the lab up?") from e
        raise NoAgentError(f"no podnet agent at {path}: start podnet agent, or use --lab NAME") from e
    error = ApiError.from_json(answer)
    if error is not None:
        raise ViewError(f"{node}: {error.msg}: {error.details}")
    return DropEvents.from_json(answer)


def line(node: str, event: DropEvent) -> str:
    """``12:00:01.123 node1 spoofed in lxc1a2b 10.244.77.7 -> 10.244.2.2 UDP 40000->9999``."""
    when = datetime.datetime.fromtimestamp(event.time).strftime("%H:%M:%S.%f")[:-3]
    ports = f" {event.sport}->{event.dport}" if event.dport is not None else ""
    where = " ".join(f"{k} {dev}" for k, dev in (("in", event.in_dev), ("out", event.out_dev)) if dev)
    policies = f"  policy {', '.join(event.policies)}" if event.policies else ""
    return (
        f"{when} {node:<8} {event.reason:<20} {where:<22} {event.src} -> {event.dst} "
        f"{event.proto}{ports}{policies}"
    )


def cmd_drops(args: argparse.Namespace, open_lab: LabOpener) -> int:
    try:
        view: ClusterView = open_lab(args.lab) if args.lab else HostView(args.socket)
        with view:
            nodes = [args.node] if args.node else list(view.nodes)
            if args.node and view.lab is not None and args.node not in view.nodes:
                raise ViewError(
                    f"{args.node} is not a node of lab {view.lab} (nodes: {', '.join(view.nodes)})"
                )
            return _run(args, view, nodes)
    except NoAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, ViewError) as exc:
        print(f"podnet drops: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, view: ClusterView, nodes: list[str]) -> int:
    cursors = dict.fromkeys(nodes, 0)
    until = time.monotonic() + args.seconds if args.seconds else None
    shown = 0
    try:
        while True:
            for node in nodes:
                answer = fetch(view, node, cursors[node])
                cursors[node] = answer.next or cursors[node]
                if not answer.enabled and shown == 0 and not args.follow:
                    print(f"{node}: drop events are off (bpf.events.drop.enabled=false)", file=sys.stderr)
                if answer.error:
                    print(f"{node}: {answer.error}", file=sys.stderr)
                for event in answer.events:
                    shown += 1
                    if args.output == "json":
                        meaning = REASONS.get(event.reason, "")
                        print(json.dumps({"node": node, **event.to_json(), "meaning": meaning}), flush=True)
                    else:
                        print(line(node, event), flush=True)
            if not args.follow or (until is not None and time.monotonic() >= until):
                break
            time.sleep(POLL)
    except KeyboardInterrupt:
        pass
    if shown == 0 and args.output == "table" and not args.follow:
        print("no drops recorded (the agents keep their last events since they started)")
    return 0
