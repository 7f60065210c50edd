"""``podnet config set``: change settings of running agents (live reconfiguration).

In a lab, every node's agent file (``/run/podnet/labs/<lab>/nodes/<node>/agent.yaml``) gets the
new values and its agent a SIGHUP; on a real host the agent's own file is edited and the agent
notices the change within a second. Values are validated for every node before any file is
written, so a bad value changes nothing. Settings that need a restart (node name, etcd, IPAM,
BGP identity) are refused by the agent and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

CONVERGE_TIMEOUT = 30.0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="change the configuration of running agents")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    s = csub.add_parser("set", help="set KEY=VALUE on running agents (routingMode, MTU, ...)")
    s.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    s.add_argument("--lab", help="every node of this lab")
    s.add_argument("--node", help="only this node of the lab")
    s.add_argument("--config", default="/etc/podnet/agent.yaml", help="the agent's file on a real host")
    s.add_argument("--no-wait", action="store_true", help="do not wait for the agents to converge")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.set_defaults(func=cmd_set)


def updated_file(path: Path, pairs: list[str]) -> dict[str, Any]:
    """The file's settings with ``pairs`` applied, validated (ConfigError/TopologyError on bad input)."""
    from podnet.config import load_config, merge, parse_pairs

    current = yaml.safe_load(path.read_text()) or {}
    new = merge(current, parse_pairs(pairs))
    load_config(new, {}, None)  # refuse before writing anything
    return new


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True))
    os.replace(tmp, path)


def cmd_set(args: argparse.Namespace) -> int:
    from podnet.config import ConfigError
    from podnet.lab.topology import TopologyError

    targets = _targets(args)
    if isinstance(targets, str):
        print(f"error: {targets}", file=sys.stderr)
        return 2
    try:
        new = {name: updated_file(path, args.pairs) for name, (path, _pid) in targets.items()}
    except (ConfigError, TopologyError, OSError) as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return 2
    started = time.time()
    for name, (path, pid) in targets.items():
        _write(path, new[name])
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
    result: dict[str, Any] = {"set": args.pairs, "nodes": sorted(targets)}
    if args.lab and not args.no_wait:
        result["converged"] = wait_converged(args.lab, sorted(targets), new, started)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"set {' '.join(args.pairs)} on {', '.join(sorted(targets))}")
        for node, state in (result.get("converged") or {}).items():
            print(f"  {node}: {state}")
    bad = [s for s in (result.get("converged") or {}).values() if not s.startswith("converged")]
    return 1 if bad else 0


def _targets(args: argparse.Namespace) -> dict[str, tuple[Path, int | None]] | str:
    if not args.lab:
        path = Path(args.config)
        return {"local": (path, None)} if path.exists() else f"no agent config at {path} (use --config)"
    from podnet.lab import cluster as cl
    from podnet.lab import state as st

    state = st.LabState.load(args.lab)
    if state is None:
        return f"no lab named {args.lab} (podnet lab list)"
    found: dict[str, tuple[Path, int | None]] = {}
    for rec in state.processes:
        if not rec.name.startswith("agent-"):
            continue
        node = rec.name.removeprefix("agent-")
        if args.node and node != args.node:
            continue
        found[node] = (cl.node_dir(args.lab, node) / "agent.yaml", rec.pid if rec.running() else None)
    if not found:
        return f"lab {args.lab} has no agent{' on ' + args.node if args.node else ''}"
    return found


def wait_converged(
    lab: str, nodes: list[str], new: dict[str, dict[str, Any]], since: float
) -> dict[str, str]:
    """Per node: 'converged' once its agent runs the new routing mode and reconciled after ``since``."""
    from podnet.config import load_config
    from podnet.lab.cluster import agent_request

    want = {n: load_config(new[n], {}, None) for n in nodes}
    state: dict[str, str] = {n: "no answer" for n in nodes}
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while time.monotonic() < deadline:
        for n in nodes:
            try:
                doc = agent_request(lab, n, {"op": "status"}, timeout=2.0)
            except OSError as exc:
                state[n] = f"agent not answering: {exc}"
                continue
            routing = doc.get("routing", {})
            ok = routing.get("mode") == want[n].routing_mode and doc.get("lastReconcile", 0) > since
            errors = doc.get("errors") or []
            refused = [e for e in errors if e.startswith("config change not applied")]
            if refused and doc.get("lastReconcile", 0) > since:
                state[n] = f"refused: {refused[0]}"
            elif ok and not errors:
                state[n] = "converged"
            else:
                state[n] = f"waiting ({'; '.join(errors) or 'reconciling'})"
        if all(s == "converged" or s.startswith("refused") for s in state.values()):
            break
        time.sleep(0.1)
    return state
