"""``podnet ipam``: every pool, which nodes hold which of its CIDRs, use, what the nodes ask for,
exhaustion, and the pods whose start (CNI ADD) failed; with ``-o json``.

Built from the agents' status documents only (each agent reports its IPAM mode's per-pool use and
its last failed ADDs), so it works the same in a lab and on a real host's agent. ``failed_start``
is what ``podnet diagnose`` says about a pod that never got an address.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from podnet.verify.view import ClusterView, ViewError


def ipam_report(view: ClusterView, node: str | None = None) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    for name in [node] if node else view.nodes:
        doc = view.agent_status(name)
        if "error" in doc and "ipam" not in doc:
            nodes[name] = {"error": doc["error"]}
            continue
        ipam = doc.get("ipam") or {}
        nodes[name] = {
            "mode": ipam.get("mode"),
            "routerIPs": ipam.get("routerIPs") or [],
            "pools": ipam.get("pools") or [],
            "failedAdds": doc.get("failedAdds") or [],
        }
        for use in ipam.get("pools") or []:
            key = f"{use['pool']}/IPv{use['family']}"
            entry = pools.setdefault(
                key, {"pool": use["pool"], "family": use["family"], "poolCIDRs": [], "nodes": {}}
            )
            entry["poolCIDRs"] = entry["poolCIDRs"] or use.get("poolCIDRs") or []
            entry["nodes"][name] = {k: use.get(k) for k in ("cidrs", "used", "capacity", "needed", "error")}
    for entry in pools.values():
        held = entry["nodes"].values()
        entry["used"] = sum(n["used"] for n in held)
        entry["capacity"] = sum(n["capacity"] for n in held)
        entry["exhausted"] = any("exhausted" in (n["error"] or "") for n in held)
    return {"nodes": nodes, "pools": dict(sorted(pools.items()))}


def failed_start(view: ClusterView, pod: str) -> tuple[str, dict[str, Any]] | None:
    """The latest failed ADD of ``pod`` (``name`` or ``namespace/name``) on any node."""
    found: list[tuple[float, str, dict[str, Any]]] = []
    for name in view.nodes:
        try:
            doc = view.agent_status(name)
        except ViewError:
            continue
        for failure in doc.get("failedAdds") or []:
            if pod in (failure.get("pod"), str(failure.get("pod", "")).split("/")[-1]):
                found.append((float(failure.get("at") or 0), name, failure))
    if not found:
        return None
    _, node, failure = max(found, key=lambda f: f[0])
    return node, failure


def print_report(report: dict[str, Any]) -> None:
    width = max([20, *(len(", ".join(e["poolCIDRs"])) for e in report["pools"].values())]) + 2
    print(f"{'POOL':<14}{'POOL CIDRS':<{width}}{'NODE':<10}{'NODE CIDRS':<34}{'USED':>10}{'NEEDS':>7}  ERROR")
    for entry in report["pools"].values():
        label = entry["pool"] if entry["family"] == 4 else f"{entry['pool']} (v6)"
        pool_cidrs = ", ".join(entry["poolCIDRs"]) or "-"
        for i, (node, use) in enumerate(sorted(entry["nodes"].items())):
            cidrs = ", ".join(use["cidrs"] or []) or "-"
            needs = "-" if use["needed"] is None else str(use["needed"])
            print(
                f"{label if i == 0 else '':<14}{pool_cidrs if i == 0 else '':<{width}}{node:<10}{cidrs:<34}"
                f"{use['used']:>4}/{use['capacity']:<5}{needs:>7}  {use['error'] or '-'}"
            )
        state = "EXHAUSTED" if entry["exhausted"] else "ok"
        print(
            f"{'':<14}{'':<22}{'total':<10}{'':<34}{entry['used']:>4}/{entry['capacity']:<5}{'':>7}  {state}"
        )
    failures = [(n, f) for n, doc in report["nodes"].items() for f in doc.get("failedAdds") or []]
    errors = [(n, doc["error"]) for n, doc in report["nodes"].items() if "error" in doc]
    for node, error in errors:
        print(f"node {node}: agent not answering: {error}")
    if failures:
        print("\nFailed pod starts (CNI ADD), newest last:")
        for node, f in sorted(failures, key=lambda nf: float(nf[1].get("at") or 0)):
            when = time.strftime("%H:%M:%S", time.localtime(float(f.get("at") or 0)))
            print(f"  {when} {node:<8} {f.get('pod') or f.get('containerID')}: code {f.get('code')} "
                  f"{f.get('msg')}: {f.get('details')}")  # fmt: skip


def add_parser(sub: argparse._SubParsersAction, run: Callable[[argparse.Namespace], int]) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ipam", help="IP pools, each node's CIDRs and use, exhaustion, failed pod starts")
    p.add_argument("--lab", help="lab name (default: this host's agent, else the only lab that is up)")
    p.add_argument("--node", help="only this node")
    p.add_argument("--agent-socket", default=None, help="a real host's agent socket")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run_ipam(args: argparse.Namespace, view: ClusterView) -> int:
    with view:
        report = ipam_report(view, args.node)
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if any("error" in n for n in report["nodes"].values()) else 0
