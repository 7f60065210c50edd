"""Helpers shared by the lab tests: pod addresses, commands in lab hosts, captures."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import permutations

from podnet.lab import state as st
from podnet.lab.topology import Topology
from podnet.verify.probe import tcp_probe


def pod_ips(topo: Topology) -> dict[str, str]:
    state = st.LabState.load(topo.name)
    assert state is not None
    return {name: info["ips"][0] for name, info in state.info["podIPs"].items()}


def sh(topo: Topology, host: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, host), *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def assert_all_pods_reach_each_other(topo: Topology) -> None:
    ips = pod_ips(topo)
    assert len(ips) == len(topo.pods)
    for a, b in permutations(sorted(ips), 2):
        res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b])
        assert res.ok, f"{a} -> {b} ({ips[b]}): {res.detail}"
        assert ips[a] in res.detail, f"{b} should see {a}'s own address: {res.detail}"


@contextmanager
def capture(topo: Topology, host: str, ifname: str, bpf: str) -> Iterator[list[str]]:
    """tcpdump inside a lab namespace while the block runs; the list fills with its lines."""
    lines: list[str] = []
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            st.ns_name(topo.name, host),
            "tcpdump",
            "-l",
            "-nn",
            "-i",
            ifname,
            "-c",
            "200",
            bpf,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # tcpdump says "listening on" on stderr once its socket is open
        assert proc.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "listening" not in proc.stderr.readline():
            pass
        yield lines
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.extend(out.splitlines())
