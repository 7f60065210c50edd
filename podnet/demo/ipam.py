"""Part 5 of the demo: the IPAM modes side by side, one small lab each, and for every pod the
address it got and where that address came from (the operator's pod CIDR, the Node's
spec.podCIDRs, the node's CRD pool, a named pool)."""

from __future__ import annotations

import argparse
import ipaddress
import json
from itertools import permutations
from pathlib import Path
from typing import Any

from podnet.demo.parts import Part, lab
from podnet.lab.topology import Pod
from podnet.lab.view import LabView

BLUE_POOLS = json.dumps(
    {
        "default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}},
        "blue": {"ipv4": {"cidrs": ["10.250.0.0/16"], "maskSize": 27}},
    }
)
MODES: tuple[tuple[str, str, list[str], tuple[Pod, ...]], ...] = (
    ("cluster-pool", "demo-ipc", ["ipam.mode=cluster-pool"], ()),
    ("kubernetes", "demo-ipk", ["datastore=kubernetes", "ipam.mode=kubernetes"], ()),
    ("crd", "demo-ipr", ["datastore=kubernetes", "ipam.mode=crd"], ()),
    (
        "multi-pool",
        "demo-ipm",
        ["datastore=kubernetes", "ipam.mode=multi-pool", f"ipam.operator.autoCreatePodIPPools={BLUE_POOLS}"],
        (Pod("blue-1", "node2", annotations={"ipam.podnet.io/ip-pool": "blue"}),),
    ),
)


def source_of(mode: str, node: str, ip: str, pools: list[dict[str, Any]]) -> str:
    """Where ``ip`` came from, in the words of its mode (pure)."""
    address = ipaddress.ip_address(ip)
    for use in pools:
        cidr = next((c for c in use["cidrs"] if address in ipaddress.ip_network(c)), None)
        if cidr is None and not (mode == "crd" and use["pool"] == "crd"):
            continue
        return {
            "cluster-pool": f"pod CIDR {cidr} the podnet operator gave {node}",
            "kubernetes": f"Node {node} spec.podCIDRs {cidr} (kube-controller-manager)",
            "crd": f"podnetnode {node} spec.ipam.pool (filled by the lab)",
            "multi-pool": f"pool {use['pool']}, CIDR {cidr} the operator gave {node}",
        }.get(mode, str(cidr))
    return "unknown"


def part_ipam(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """5. IPAM modes side by side: cluster-pool, kubernetes (host scope), crd, multi-pool"""
    rows = ["| mode | pod | node | address | where it came from |", "|---|---|---|---|---|"]
    found: dict[str, list[dict[str, str]]] = {}
    for mode, name, sets, pods in MODES:
        with lab("l2", name, sets, args, extra_pods=pods) as view:
            found[mode] = _pods(view, mode)
            known = all(p["source"] != "unknown" for p in found[mode])
            detail = "; ".join(f"{p['pod']} {p['address']}" for p in found[mode])
            part.step(f"{mode}: every pod's address comes from its mode's source", known, True, detail)
            ok, why = _reach(view)
            part.step(f"{mode}: pods on different nodes reach each other", ok, True, why)
        rows += [
            f"| {mode} | {p['pod']} | {p['node']} | {p['address']} | {p['source']} |" for p in found[mode]
        ]
    blue = next((p for p in found.get("multi-pool", []) if p["pod"] == "blue-1"), None)
    part.step(
        "multi-pool: the annotated pod got its address from pool blue",
        blue is not None and blue["source"].startswith("pool blue"),
        True,
        blue["source"] if blue else "no pod blue-1",
    )
    part.data["ipam"] = found
    part.markdown += ["", *rows, ""]


def _pods(view: LabView, mode: str) -> list[dict[str, str]]:
    pools = {node: (view.agent_status(node).get("ipam") or {}).get("pools") or [] for node in view.nodes}
    return [
        {
            "pod": pod,
            "node": info["node"],
            "address": info["ips"][0],
            "source": source_of(mode, info["node"], info["ips"][0], pools[info["node"]]),
        }
        for pod, info in sorted(view.pods.items())
    ]


def _reach(view: LabView) -> tuple[bool, str]:
    from podnet.verify.probe import tcp_probe

    by_node: dict[str, str] = {}
    for pod, info in sorted(view.pods.items()):
        by_node.setdefault(info["node"], pod)
    failures = []
    for a, b in permutations(sorted(by_node.values()), 2):
        res = tcp_probe(view.ns(a), view.ns(b), str(view.pod_ip(b)), timeout=2.0)
        if not res.ok:
            failures.append(f"{a} -> {b}: {res.detail}")
    return not failures, "; ".join(failures) or f"{len(by_node)} pods, one per node, all pairs by TCP"
