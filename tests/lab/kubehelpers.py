"""Helpers of the real-kubelet tiers: kubectl on a lab's cluster, waiting for a Deployment's pods,
what a real node must leave unchanged on the machine."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import wait_for

from podnet import owned
from podnet.lab import kubeapi, kubenode
from podnet.lab import state as st
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology

MACHINE_SYSCTLS = [f"/proc/sys/{k}" for k in kubenode.SYSCTL_SHIMS]
# what a real node would make on the machine if it were not in its own mount namespace (not
# /var/lib/cni or /run/netns: the runtime tier and every lab make those, in parallel workers too)
MACHINE_PATHS = [
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/log/pods",
    "/usr/libexec/kubernetes",
    "/etc/cni",
    "/opt/cni",
    "/run/podnet/agent.sock",
    "/var/lib/podnet",
]
# what a real node's script mounts over in its own mount namespace: never in the machine's
NODE_MOUNTS = {"/etc", "/opt", "/run", "/var/lib", "/var/log", "/run/containerd"}
NODE_MOUNT_TREES = ("/etc/", "/opt/", "/proc/sys/")
HTTP_PORT = 8080
# PID 1 of a container ignores SIGTERM unless it traps it: without the trap every pod would take
# its whole 30 s grace period to stop
SERVE = "hostname > /www/index.html; httpd -f -p 8080 -h /www & trap 'exit 0' TERM; wait"


def machine() -> dict[str, Any]:
    """What a real node must not change on the machine: sysctls, paths, cgroup roots, mounts."""
    cgroups = sorted(
        str(d) for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir() for d in h.glob(f"{st.NS_PREFIX}*")
    )
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "sysctls": {p: Path(p).read_text() for p in MACHINE_SYSCTLS},
        "paths": {p: os.path.lexists(p) for p in MACHINE_PATHS},
        "cgroups": cgroups,
        "mounts": sorted(m for m in mounts if m in NODE_MOUNTS or m.startswith(NODE_MOUNT_TREES)),
    }


def kubectl(topo: Topology, *args: str, check: bool = True, stdin: str | None = None) -> str:
    argv = [str(kubeapi.binary("kubectl")), f"--kubeconfig={kubeapi.kubeconfig_path(topo.name)}", *args]
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr or res.stdout}")
    return res.stdout


def pods(topo: Topology, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
    doc = json.loads(kubectl(topo, "-n", namespace, "get", "pods", "-l", selector, "-o", "json"))
    return list(doc["items"])


def running(topo: Topology, selector: str, count: int, namespace: str = "default") -> list[dict[str, Any]]:
    """The ``count`` Running (and not terminating) pods of ``selector``, waited for."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = [
            p
            for p in pods(topo, selector, namespace)
            if p["status"].get("phase") == "Running"
            and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
        ]
        return len(found) == count

    wait_for(ready, f"{count} Running pods of {selector}", 180)
    return found


def veths(topo: Topology, node: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", st.ns_name(topo.name, node), "-j", "link", "show", "type", "veth"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith(owned.ENDPOINT_PREFIX)
    ]


def nodes_ready(topo: Topology) -> set[str]:
    items = json.loads(kubectl(topo, "get", "nodes", "-o", "json"))["items"]
    return {
        n["metadata"]["name"]
        for n in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
    }


def lab_with_real_nodes(topo: Topology, suffix: str) -> Iterator[Topology]:
    """``topo`` up under a name of its own (``t<hex>-<suffix>``), then down; afterwards the
    machine's sysctls, paths, mounts and cgroups must be as they were before it."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    before = machine()
    topo = dataclasses.replace(topo, name=f"t{secrets.token_hex(2)}-{suffix}"[:16])
    try:
        bring_up(topo)
        yield topo
    finally:
        bring_down(topo.name)
    after = machine()
    mine = [c for c in after["cgroups"] if topo.name in c]
    assert not mine, f"cgroups left behind: {mine}"
    for what in ("sysctls", "paths", "mounts"):
        changed = (
            {k: (before[what].get(k), v) for k, v in after[what].items() if before[what].get(k) != v}
            if isinstance(after[what], dict)
            else (before[what], after[what])
        )
        assert after[what] == before[what], f"{what} changed: {changed}"
