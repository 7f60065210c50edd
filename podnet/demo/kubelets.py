"""Part 8 of the demo: real kubelets (``examples/real-nodes.yaml``). node1 and node2 run kubelet
v1.20.2 and containerd, node3 is a node the lab plays kubelet for. A Deployment made with kubectl
spreads over the real nodes; each pod's address comes from its node's podnet pod CIDR; the lab's
pod on node3 reaches every one over TCP across the routers; scaled up and down, the agents' IPAM
follows containerd's CNI ADD and DEL; the connectivity test takes the real pods in."""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from podnet.demo.parts import Part, lab, say
from podnet.lab import images, kubeapi
from podnet.util import netns
from podnet.verify.connectivity import run_checks
from podnet.verify.view import PathView

SERVE = "hostname > /www/index.html; httpd -f -p 8080 -h /www & trap 'exit 0' TERM; wait"  # stops at once


def part_kubelets(part: Part, folder: Path, args: argparse.Namespace) -> None:
    """8. real-nodes: a Deployment on real kubelets + containerd, scaled up and down"""
    with lab("real-nodes", "demo-kubelet", [], args) as view:
        kubectl(view.name, "create", "deployment", "web", f"--image={images.BUSYBOX}", "--replicas=4",
                "--", "sh", "-c", SERVE)  # fmt: skip
        pods = running(view.name, 4)
        cidrs = pod_cidrs(view)
        rows = [row(p, cidrs) for p in pods]
        part.step(
            "4 pods of a kubectl Deployment run on node1 and node2, addressed from their node's pod CIDR",
            {r["node"] for r in rows} == {"node1", "node2"} and all(r["source"] for r in rows),
            True,
            "; ".join(f"{r['pod']} {r['address']} on {r['node']}" for r in rows),
        )
        pod3 = view.ns("pod3")
        answers = {r["pod"]: http_get(pod3, r["address"], 8080) for r in rows}
        part.step(
            "pod3 (a lab pod on node3) reaches every real pod over TCP, node1's across both routers",
            all(body == name for name, body in answers.items()),
            True,
            "; ".join(f"{name} answered {body!r}" for name, body in answers.items()),
        )
        say("scaling web to 6, then to 1")
        kubectl(view.name, "scale", "deployment", "web", "--replicas=6")
        six = running(view.name, 6)
        kubectl(view.name, "scale", "deployment", "web", "--replicas=1")
        one = running(view.name, 1, settle=True)
        used = ipam_used(view)
        expected = {n: sum(p["spec"]["nodeName"] == n for p in one) for n in ("node1", "node2")}
        part.step(
            "scaled 4 -> 6 -> 1, the agents hold exactly the running pods' addresses (containerd's CNI DEL)",
            {n: used[n] for n in expected} == expected,
            True,
            f"6 pods ran; now {len(one)}; addresses held: {used}",
        )
        report = run_checks(view)
        name = one[0]["metadata"]["name"]
        part.step(
            "the connectivity test passes with the real pod in it",
            report.ok and any(name in (r.spec.src.host, r.spec.dst.host) for r in report.results),
            True,
            f"{sum(r.status == 'pass' for r in report.results)} of {len(report.results)} checks passed",
        )
        part.data["kubelets"] = {"pods": rows, "scaledTo6": len(six), "ipamUsed": used}
        part.markdown += [
            "| pod | node | address | where it came from |",
            "|---|---|---|---|",
            *[f"| {r['pod']} | {r['node']} | {r['address']} | {r['source']} |" for r in rows],
            "",
        ]


def kubectl(lab: str, *args: str) -> str:
    argv = [str(kubeapi.binary("kubectl")), f"--kubeconfig={kubeapi.kubeconfig_path(lab)}", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def running(lab: str, count: int, settle: bool = False, timeout: float = 120) -> list[dict[str, Any]]:
    """The Deployment's pods once exactly ``count`` run (``settle``: and none is terminating)."""
    deadline = time.monotonic() + timeout
    while True:
        pods = json.loads(kubectl(lab, "get", "pods", "-l", "app=web", "-o", "json"))["items"]
        live = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")
                and not p["metadata"].get("deletionTimestamp")]  # fmt: skip
        if len(live) == count and (not settle or len(pods) == count):
            return live
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(live)} of {count} pods of web running after {timeout:.0f}s")
        time.sleep(0.5)


def pod_cidrs(view: PathView) -> dict[str, list[str]]:
    return {n: list((view.agent_status(n).get("node") or {}).get("podCIDRs") or []) for n in view.nodes}


def ipam_used(view: PathView) -> dict[str, int]:
    """Addresses each agent holds now (its status, asked afresh)."""
    from podnet.lab.view import LabView

    with LabView(view.name) as fresh:
        return {n: int((fresh.agent_status(n).get("ipam") or {}).get("used") or 0) for n in fresh.nodes}


def row(pod: dict[str, Any], cidrs: dict[str, list[str]]) -> dict[str, str]:
    node, ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    source = next(
        (f"podnet cluster-pool {c} of {node}" for c in cidrs.get(node, [])
         if ipaddress.ip_address(ip) in ipaddress.ip_network(c)), "",
    )  # fmt: skip
    return {"pod": pod["metadata"]["name"], "node": node, "address": ip, "source": source}


def http_get(ns: str, ip: str, port: int) -> str:
    """The body of ``GET /`` from inside namespace ``ns``, or the error."""
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        with sock:
            sock.settimeout(5)
            sock.connect((ip, port))
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as e:
        return f"error: {e}"
    return data.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()
