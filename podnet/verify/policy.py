"""``podnet policy show POD``: the NetworkPolicy rules in force for a pod, as its node's agent
enforces them: which policies isolate it (ingress, egress) and what they allow, selectors
resolved to addresses and named ports to numbers."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from typing import Any

from podnet.agent.api import request
from podnet.verify.view import LabOpener, NoAgentError, ViewError


def add_parser(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="NetworkPolicy: the rules in force for a pod")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="the rules in force for POD (ingress and egress, resolved)")
    show.add_argument("pod", help="a pod of the lab (its lab name, <namespace>.<name> for a real pod)")
    show.add_argument("--lab", help="the lab (default: the only one up)")
    show.add_argument("-o", "--output", choices=["table", "json"], default="table")
    show.set_defaults(func=partial(cmd_show, open_lab=open_lab))


def render(pod: str, doc: dict[str, Any]) -> list[str]:
    """The text of ``podnet policy show`` (pure)."""
    lines = [f"{pod} on {doc.get('node')}"]
    for direction, key, rules in (
        ("Ingress", "ingressIsolatedBy", "ingress"),
        ("Egress", "egressIsolatedBy", "egress"),
    ):
        by = doc.get(key) or []
        if not by:
            lines.append(f"  {direction}: not isolated (everything allowed)")
            continue
        allowed = doc.get(rules) or []
        entries = f"{len(allowed)} allowed entr{'y' if len(allowed) == 1 else 'ies'}"
        lines.append(f"  {direction}: isolated by {', '.join(by)}; {entries}")
        lines += [f"    allow {e}" for e in allowed] or ["    (nothing: every new connection is dropped)"]
    for problem in doc.get("invalid") or []:
        lines.append(f"  refused policy: {problem}")
    for problem in doc.get("unresolved") or []:
        lines.append(f"  note: {problem}")
    return lines


def cmd_show(args: argparse.Namespace, open_lab: LabOpener) -> int:
    try:
        with open_lab(args.lab) as view:
            pods = view.pods  # type: ignore[attr-defined]
            if args.pod not in pods:
                raise ViewError(f"{args.pod} is no pod of lab {view.lab} (pods: {', '.join(sorted(pods))})")
            info = pods[args.pod]
            docs = []
            for ip in info["ips"]:
                docs.append(
                    request(view.agent_socket(info["node"]), {"op": "policy", "ip": ip}, timeout=10.0)
                )
    except (ViewError, NoAgentError, OSError) as exc:
        print(f"podnet policy: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"pod": args.pod, "addresses": docs}, indent=2))
        return 0
    for doc in docs:
        if not doc.get("ok", True):
            print(f"podnet policy: {doc.get('msg')}", file=sys.stderr)
            return 1
        print("\n".join(render(args.pod, doc)))
    return 0
