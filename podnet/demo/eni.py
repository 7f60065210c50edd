"""Part 6 of the demo: AWS ENI mode in the lab's VPC (seeds 003 and 004). Pods get addresses of
their node's ENIs, the VPC routes them without SNAT or encapsulation, and a pod's packets leave
through the ENI that owns its address (source-based routing; the VPC's source check drops
anything else). The report lists each node's ENIs as ``podnet status`` shows them."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from podnet.demo.parts import Part, lab
from podnet.lab.view import LabView
from podnet.verify.probe import tcp_probe

WORLD = "203.0.113.10"


def part_eni(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """6. AWS ENI mode: pods on VPC addresses, routed by the VPC, leaving through their own ENI"""
    with lab("eni", "demo-eni", ["datastore=etcd"], args) as view:
        enis = {node: view.agent_status(node).get("eni") or {} for node in view.nodes}
        owners = {
            address: (node, e["device"], e["subnet"])
            for node, doc in enis.items()
            for e in doc.get("enis") or []
            for address in e.get("addresses") or {}
        }
        pods = {pod: str(view.pod_ip(pod)) for pod in sorted(view.pods)}
        on_enis = {pod: owners.get(ip) for pod, ip in pods.items()}
        part.step(
            "every pod's address is a secondary address of its node's ENI",
            all(o is not None and o[0] == view.pods[p]["node"] for p, o in on_enis.items()),
            True,
            "; ".join(
                f"{p} {pods[p]} on {o[0]}/{o[1]} ({o[2]})" if o else f"{p}: on no ENI"
                for p, o in on_enis.items()
            ),
        )
        a, b = "pod1", "pod2"
        res = tcp_probe(view.ns(a), view.ns(b), pods[b], port=7000)
        part.step(
            "pods in two subnets reach each other with their own addresses (no SNAT, no tunnel)",
            res.ok and pods[a] in res.detail,
            True,
            res.detail,
        )
        route = _route_from_pod(view, a, pods[a])
        part.step(
            f"{a}'s packets to the world leave through its own ENI (ip rule 111 -> table 11)",
            "dev eth1" in route and "table 11" in route,
            True,
            route,
        )
        ping = subprocess.run(
            ["ip", "netns", "exec", view.ns(a), "ping", "-c", "2", "-W", "1", WORLD],
            capture_output=True,
            text=True,
        )
        drops = _source_check_drops(view)
        part.step(
            "pod -> world works and the VPC's source check dropped nothing",
            ping.returncode == 0 and drops == 0,
            True,
            f"ping {WORLD}: exit {ping.returncode}; source-check drops {drops}",
        )
        jumbo = _ping(view, a, pods[b], "-M", "do", "-s", "8972")
        said = (jumbo.stdout.strip() or jumbo.stderr.strip()).splitlines()
        part.step("8972-byte pings with DF set pass at the VPC's MTU 9001", jumbo.returncode == 0, True,
                  said[-1] if said else "")  # fmt: skip
        part.data["eni"] = {node: doc.get("enis") for node, doc in enis.items()}
        part.markdown += ["", *_table(enis), ""]


def _ping(view: LabView, pod: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", view.ns(pod), "ping", "-c", "2", "-W", "1", *extra, dst]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def _route_from_pod(view: LabView, pod: str, ip: str) -> str:
    node = view.pods[pod]["node"]
    host = next(e["hostIfname"] for e in (view.agent_status(node).get("guard") or {}).get("endpoints", [])
                if ip in e["addresses"])  # fmt: skip
    res = subprocess.run(
        ["ip", "netns", "exec", view.ns(node), "ip", "route", "get", WORLD, "from", ip, "iif", host],
        capture_output=True, text=True,
    )  # fmt: skip
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr) else ""


def _source_check_drops(view: LabView) -> int:
    res = subprocess.run(["ip", "netns", "exec", view.ns("vpc"), "nft", "-j", "list", "table", "ip", "vpc"],
                         capture_output=True, text=True)  # fmt: skip
    total = 0
    for item in json.loads(res.stdout or '{"nftables": []}')["nftables"]:
        rule = item.get("rule") or {}
        if str(rule.get("comment", "")).startswith("source check"):
            total += sum(e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e)
    return total


def _table(enis: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| node | device | ENI | subnet | table | addresses (owner) |", "|---|---|---|---|---|---|"]
    for node, doc in sorted(enis.items()):
        for e in doc.get("enis") or []:
            owned = (
                ", ".join(f"{a} ({o or 'free'})" for a, o in (e.get("addresses") or {}).items() if o) or "-"
            )
            rows.append(f"| {node} | {e['device']} | {e['id']} | {e['subnet']} | {e['table']} | {owned} |")
    return rows
