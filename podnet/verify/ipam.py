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
from collections.abc import Callable, Mapping
from typing import Any

from podnet.statusdoc.ipam import FailedAdd, IpamStatus, PoolUse
from podnet.verify.view import ClusterView, ViewError, agent_document


def ipam_report(view: ClusterView, node: str | None = None) -> dict[str, Any]:
    """``podnet ipam -o json``: per node its mode, router IPs, pools and failed ADDs; per pool
    (and family) each node's share and the totals."""
    nodes: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    for name in [node] if node else view.nodes:
        doc = agent_document(view, name)
        if doc.unanswered:
            nodes[name] = {"error": doc.unanswered}
            continue
        ipam = doc.ipam or IpamStatus()
        nodes[name] = {
            "mode": ipam.mode if doc.ipam else None,
            "routerIPs": list(ipam.router_ips),
            "pools": [p.to_json() for p in ipam.pools or ()],
            "failedAdds": [f.to_json() for f in doc.failed_adds or ()],
        }
        for use in ipam.pools or ():
            key = f"{use.pool}/IPv{use.family}"
            entry = pools.setdefault(
                key, {"pool": use.pool, "family": use.family, "poolCIDRs": [], "nodes": {}}
            )
            entry["poolCIDRs"] = entry["poolCIDRs"] or list(use.pool_cidrs)
            entry["nodes"][name] = node_use(use)
    for entry in pools.values():
        entry.update(pool_totals(entry["nodes"]))
    return {"nodes": nodes, "pools": dict(sorted(pools.items()))}


def node_use(use: PoolUse | Mapping[str, Any]) -> dict[str, Any]:
    """One node's share of a pool as the report keeps it (from the agent's pool use, or its JSON).
    ``exhausted`` is the agent's word (its IPAM mode knows whether anything gives the node more);
    an agent too old to say is taken at its error's word."""
    if not isinstance(use, PoolUse):
        use = PoolUse.from_json(use)
    return {
        "cidrs": list(use.cidrs),
        "used": use.used,
        "capacity": use.capacity,
        "needed": use.needed,
        "error": use.error,
        "exhausted": use.exhausted,
    }


def pool_totals(nodes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A pool's totals over its nodes (exact integers, for ``-o json``). The pool is exhausted when
    one of its nodes is, or when a node's error says the pool itself is (a pooled mode: no CIDR left
    to carve, while nodes may still have free addresses)."""
    exhausted_nodes = sorted(name for name, use in nodes.items() if use["exhausted"])
    return {
        "used": sum(use["used"] for use in nodes.values()),
        "capacity": sum(use["capacity"] for use in nodes.values()),
        "exhausted": bool(exhausted_nodes) or any("exhausted" in (u["error"] or "") for u in nodes.values()),
        "exhaustedNodes": exhausted_nodes,
    }


def pool_state(entry: Mapping[str, Any]) -> str:
    """The total row's verdict: ``ok``, or ``EXHAUSTED`` and where."""
    if entry["exhaustedNodes"]:
        return f"EXHAUSTED on {', '.join(entry['exhaustedNodes'])}"
    if entry["exhausted"]:
        free = entry["capacity"] - entry["used"]
        return f"EXHAUSTED: the pool gives no node more; {format_capacity(free)} free on its nodes"
    return "ok"


def format_capacity(n: int) -> str:
    """An address count people can read: exact up to six digits, then as a power of two when it
    is one give or take a few (a /64 holds ``2^64-2`` pod addresses), else ``~1.8e19``. Text only:
    ``-o json`` keeps the exact integers."""
    if abs(n) < 10**6:
        return str(n)
    for k in (n.bit_length() - 1, n.bit_length()):
        rest = n - (1 << k)
        if abs(rest) < 1000:
            return f"2^{k}{rest:+d}" if rest else f"2^{k}"
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"~{mantissa}e{int(exponent)}"


def format_use(used: int, capacity: int) -> str:
    """``5/254``, ``1/2^64-2``."""
    return f"{format_capacity(used)}/{format_capacity(capacity)}"


def failed_start(view: ClusterView, pod: str) -> tuple[str, FailedAdd] | None:
    """The latest failed ADD of ``pod`` (``name`` or ``namespace/name``) on any node."""
    found: list[tuple[str, FailedAdd]] = []
    for name in view.nodes:
        try:
            doc = agent_document(view, name)
        except ViewError:
            continue
        found += [(name, failure) for failure in doc.failed_adds or () if failure.names(pod)]
    if not found:
        return None
    return max(found, key=lambda f: f[1].at)


def print_report(report: dict[str, Any]) -> None:
    print("\n".join(report_lines(report)))


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The table: one row per pool and node, a total row per pool, then agents not answering
    and the failed pod starts."""
    width = max([20, *(len(", ".join(e["poolCIDRs"])) for e in report["pools"].values())]) + 2
    lines = [f"{'POOL':<14}{'POOL CIDRS':<{width}}{'NODE':<10}{'NODE CIDRS':<34}{'USED':>6}/{'OF':<9}"
             f"{'NEEDS':>7}  ERROR"]  # fmt: skip
    for entry in report["pools"].values():
        label = entry["pool"] if entry["family"] == 4 else f"{entry['pool']} (v6)"
        pool_cidrs = ", ".join(entry["poolCIDRs"]) or "-"
        for i, (node, use) in enumerate(sorted(entry["nodes"].items())):
            cidrs = ", ".join(use["cidrs"] or []) or "-"
            needs = "-" if use["needed"] is None else format_capacity(use["needed"])
            error = use["error"] or ("exhausted" if use["exhausted"] else "-")
            lines.append(
                f"{label if i == 0 else '':<14}{pool_cidrs if i == 0 else '':<{width}}{node:<10}{cidrs:<34}"
                f"{_use_cell(use['used'], use['capacity'])}{needs:>7}  {error}"
            )
        lines.append(
            f"{'':<14}{'':<{width}}{'total':<10}{'':<34}{_use_cell(entry['used'], entry['capacity'])}"
            f"{'':>7}  {pool_state(entry)}"
        )
    for node, doc in report["nodes"].items():
        if "error" in doc:
            lines.append(f"node {node}: agent not answering: {doc['error']}")
    failures = [
        (n, FailedAdd.from_json(f)) for n, doc in report["nodes"].items() for f in doc.get("failedAdds") or []
    ]
    if failures:
        lines += ["", "Failed pod starts (CNI ADD), newest last:"]
        for node, f in sorted(failures, key=lambda nf: nf[1].at):
            when = time.strftime("%H:%M:%S", time.localtime(f.at))
            lines.append(f"  {when} {node:<8} {f.pod or f.container_id}: code {f.code} {f.msg}: {f.details}")
    return lines


def _use_cell(used: int, capacity: int) -> str:
    """``  253/254      ``: the slash in one column, whatever the numbers' size."""
    return f"{format_capacity(used):>6}/{format_capacity(capacity):<9}"


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
