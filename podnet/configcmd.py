"""``podnet config set``: change settings of running agents (live reconfiguration).

In a lab, every node's agent file (``/run/podnet/labs/<lab>/nodes/<node>/agent.yaml``) gets the
new values and its agent a SIGHUP; on a real host the agent's own file is edited and the agent
notices the change within a second. Values are validated for every node before any file is
written, so a bad value changes nothing. Settings that need a restart (node name, etcd, IPAM,
BGP identity) are refused by the agent and reported. Which agents there are is the adapter's
answer (``RunningAgent``): ``--lab`` takes the lab's (``podnet.cli`` passes
``podnet.lab.view.lab_agents``), otherwise the one agent whose file is ``--config``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from podnet.agent.api import request
from podnet.datapath.plan import KEPT_PATH
from podnet.util.files import write_private

CONVERGE_TIMEOUT = 30.0
HOST_NODE = "local"


@dataclass(frozen=True)
class RunningAgent:
    """One agent to reconfigure: the file it reads its settings from, the PID to SIGHUP so it
    reloads at once (None: it notices a changed file by itself, or it is not running), and its API
    socket to watch it converge (None: nothing to wait for)."""

    node: str
    config: Path
    pid: int | None
    socket: Path | None


class TargetError(ValueError):
    """No agent to reconfigure; the message says why and where to look."""


LabAgents = Callable[[str, str | None], list[RunningAgent]]
"""The lab adapter: the running agents of lab ``name`` (one node's only, if given), or TargetError."""


def add_parser(sub: argparse._SubParsersAction, lab_agents: LabAgents) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="change the configuration of running agents")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    s = csub.add_parser("set", help="set KEY=VALUE on running agents (routingMode, MTU, ...)")
    s.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    s.add_argument("--lab", help="every node of this lab")
    s.add_argument("--node", help="only this node of the lab")
    s.add_argument("--config", default="/etc/podnet/agent.yaml", help="the agent's file on a real host")
    s.add_argument("--no-wait", action="store_true", help="do not wait for the agents to converge")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.set_defaults(func=partial(cmd_set, lab_agents=lab_agents))


def host_agents(config: Path) -> list[RunningAgent]:
    """A real host's one agent: its file is edited, the agent notices it by itself."""
    if not config.exists():
        raise TargetError(f"no agent config at {config} (use --config)")
    return [RunningAgent(HOST_NODE, config, None, None)]


def updated_file(path: Path, pairs: list[str]) -> dict[str, Any]:
    """The file's settings with ``pairs`` applied, validated (ConfigError on bad input)."""
    from podnet.config import load_config, merge, parse_pairs

    current = yaml.safe_load(path.read_text()) or {}
    new = merge(current, parse_pairs(pairs))
    load_config(new, {}, None)  # refuse before writing anything
    return new


def _write(path: Path, data: dict[str, Any]) -> None:
    write_private(path, yaml.safe_dump(data, sort_keys=True))  # 0600: it may hold secrets


def cmd_set(args: argparse.Namespace, lab_agents: LabAgents) -> int:
    from podnet.config import ConfigError

    try:
        agents = lab_agents(args.lab, args.node) if args.lab else host_agents(Path(args.config))
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        new = {a.node: updated_file(a.config, args.pairs) for a in agents}
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return 2
    started = time.time()
    for a in agents:
        _write(a.config, new[a.node])
        if a.pid is not None:
            os.kill(a.pid, signal.SIGHUP)
    nodes = sorted(a.node for a in agents)
    result: dict[str, Any] = {"set": args.pairs, "nodes": nodes}
    watched = [a for a in agents if a.socket is not None]
    if watched and not args.no_wait:
        result["converged"] = wait_converged(watched, new, started)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"set {' '.join(args.pairs)} on {', '.join(nodes)}")
        for node, state in (result.get("converged") or {}).items():
            print(f"  {node}: {state}")
    bad = [s for s in (result.get("converged") or {}).values() if not s.startswith("converged")]
    return 1 if bad else 0


def wait_converged(
    agents: list[RunningAgent], new: dict[str, dict[str, Any]], since: float
) -> dict[str, str]:
    """Per node: 'converged' once its agent runs the new routing mode, reconciled after ``since`` and
    keeps no peer on its previous path (a live switch bridges a peer that has not published what
    the new path needs yet, e.g. its VTEP)."""
    from podnet.config import load_config

    sockets = {a.node: a.socket for a in sorted(agents, key=lambda a: a.node) if a.socket is not None}
    want = {n: load_config(new[n], {}, None) for n in sockets}
    state: dict[str, str] = {n: "no answer" for n in sockets}
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while time.monotonic() < deadline:
        for n, path in sockets.items():
            try:
                doc = request(path, {"op": "status"}, timeout=2.0)
            except OSError as exc:
                state[n] = f"agent not answering: {exc}"
                continue
            routing = doc.get("routing", {})
            ok = routing.get("mode") == want[n].routing_mode and doc.get("lastReconcile", 0) > since
            errors = doc.get("errors") or []
            bridged = [
                p["name"]
                for p in doc.get("peers") or []
                if any(KEPT_PATH in i for i in p.get("issues") or [])
            ]
            refused = [e for e in errors if e.startswith("config change not applied")]
            if refused and doc.get("lastReconcile", 0) > since:
                state[n] = f"refused: {refused[0]}"
            elif ok and not errors and not bridged:
                state[n] = "converged"
            elif ok and not errors:
                state[n] = f"waiting (previous path kept to {', '.join(bridged)})"
            else:
                state[n] = f"waiting ({'; '.join(errors) or 'reconciling'})"
        if all(s == "converged" or s.startswith("refused") for s in state.values()):
            break
        time.sleep(0.1)
    return state
