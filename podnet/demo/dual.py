"""Part 7 of the demo: seed 000 in both families (``examples/dual-stack-bgp.yaml``). Every pod has
an IPv4 and an IPv6 address; each node peers with its gateway router once per family and the
routers learn both pod CIDRs of every node; IPv6 pods cross the routers unencapsulated, keep
their addresses among themselves and leave for the world as their node's IPv6 address."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from podnet.demo.parts import Part, lab
from podnet.verify.capture import capture, default_pair
from podnet.verify.connectivity import run_checks
from podnet.verify.probe import tcp_probe

WORLD6 = "2001:db8:113::10"


def part_dual_stack(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """7. dual-stack-bgp: IPv4 and IPv6 pods routed natively with BGP sessions in both families"""
    with lab("dual-stack-bgp", "demo-dual", [], args) as view:
        report = run_checks(view)
        families = {"IPv6" if r.spec.name.startswith("IPv6 ") else "IPv4" for r in report.results}
        passed = sum(r.status == "pass" for r in report.results)
        part.step(
            "the connectivity test passes in both families",
            report.ok and families == {"IPv4", "IPv6"},
            True,
            f"{passed} of {len(report.results)} checks passed",
        )
        learned = _bird_routes(view.ns("r1"))
        v6 = [line for line in learned if ":" in line.split()[0]]
        part.step(
            "r1 learned every node's IPv6 pod CIDR over IPv6 sessions (proto bird)",
            len(v6) == len(view.nodes) and all(" via fd00:" in line for line in v6),
            True,
            "; ".join(v6) or "no IPv6 BGP routes in r1",
        )
        a, b = default_pair(view, 6)
        cap = capture(view, "r1", "to-r2", 1.0, a, b)
        part.step(
            "capture on r1:to-r2 shows plain IPv6 pod addresses", cap.kind == "plain", True, cap.sentence
        )
        own = tcp_probe(view.ns(a.host), view.ns(b.host), str(b.ip))
        part.step(
            f"{b.host} sees {a.host}'s own IPv6 address (pod-to-pod is never masqueraded)",
            own.ok and str(a.ip) in own.detail,
            True,
            own.detail,
        )
        node_ip = str(view.node_ip(view.pods[a.host]["node"], 6))
        world = tcp_probe(view.ns(a.host), view.ns("world"), WORLD6)
        part.step(
            f"the world sees {a.host} as its node's IPv6 address {node_ip} (masqueraded)",
            world.ok and node_ip in world.detail,
            True,
            world.detail,
        )
        part.data["dualStack"] = {
            "birdRoutes": learned,
            "capture": cap.sentence,
            "checks": [r.to_json() for r in report.results],
        }
        part.markdown += [
            "`ip route show proto bird` in r1 (both families):",
            "",
            *[f"    {line}" for line in learned],
            "",
            f"Capture on the R1-R2 link during an IPv6 ping: **{cap.sentence}**.",
            "",
        ]


def _bird_routes(ns: str) -> list[str]:
    found = []
    for family in ("-4", "-6"):
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", family, "route", "show", "proto", "bird"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        found += [line.strip() for line in out.splitlines() if line.strip()]
    return found
