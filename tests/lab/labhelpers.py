"""Helpers shared by the lab tests: pod addresses, commands in lab hosts, captures."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import permutations
from pathlib import Path
from typing import Any

from podnet.lab import state as st
from podnet.lab.topology import Topology
from podnet.util import netns
from podnet.verify.probe import tcp_probe

PODNET = str(Path(sys.executable).with_name("podnet"))


def podnet_json(*args: str, code: int | None = 0, timeout: float = 180) -> dict[str, Any]:
    """``podnet <args>`` (the venv's), its exit status checked, its JSON output parsed."""
    res = subprocess.run([PODNET, *args], capture_output=True, text=True, timeout=timeout)
    if code is not None:
        assert res.returncode == code, (
            f"podnet {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        )
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


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
        said = _wait_for_line(proc, "listening", timeout=10)
        assert "listening" in said, f"tcpdump on {host}/{ifname} did not start listening: {said!r}"
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


def _wait_for_line(proc: subprocess.Popen[str], word: str, timeout: float) -> str:
    """What ``proc`` wrote to stderr until a line with ``word``, its exit, or ``timeout``."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    said = ""
    deadline = time.monotonic() + timeout
    while word not in said:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)  # raw read: no buffered readline that could block past the deadline
        if not chunk:
            break  # tcpdump exited
        said += chunk.decode(errors="replace")
    return said


def config_set(lab: str, *pairs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podnet.cli", "config", "set", "--lab", lab, *pairs],
        capture_output=True,
        text=True,
        timeout=90,
    )


class Stream:
    """An established TCP connection between two pods that must survive the mode switches."""

    def __init__(self, client_ns: str, server_ns: str, server_ip: str) -> None:
        family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
        with netns.entered(server_ns):
            self.listener = socket.create_server((server_ip, 7777), family=family)
        with netns.entered(client_ns):
            self.client = socket.create_connection((server_ip, 7777), timeout=5)
        self.server, _ = self.listener.accept()
        self.server.settimeout(5)

    def exchange(self, size: int = 64 * 1024) -> None:
        payload = b"x" * size
        self.client.sendall(payload)
        got = b""
        while len(got) < size:
            chunk = self.server.recv(size - len(got))
            assert chunk, "connection closed"
            got += chunk

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            s.close()


def agent_pid(topo: Topology, node: str) -> int:
    """The PID of ``node``'s running agent (as the lab started it)."""
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(f"agent-{node}")
    assert rec is not None and rec.running()
    return rec.pid


def restart_agent(topo: Topology, node: str) -> None:
    """Start ``node``'s agent again once the old one (signalled by the test) has exited."""
    from podnet.lab import cluster as cl

    state = st.LabState.load(topo.name)
    assert state is not None

    def exited() -> bool:
        rec = state.process(f"agent-{node}")
        return rec is None or not rec.running()

    wait_for(exited, f"the old agent of {node} to exit", 15)
    assert cl.start_agent(topo, state, topo.host(node)) == 1
    cl.wait_agents_ready(topo, state)
