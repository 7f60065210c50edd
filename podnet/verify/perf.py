"""``podnet perf``: iperf3 host-to-host over the underlay against pod-to-pod across nodes.

Every measurement is a real iperf3 run inside lab namespaces: a one-off server (``-s -1``) in
the destination namespace, a bounded client (``-t N -J``) in the source namespace, both killed by
PID if they linger. Targets are interleaved (host, pods, host, pods, ...) so that a slow moment
of the machine hits every target alike; the report gives each target's median and its ratio to
the host-to-host median (the physical limit of the lab's underlay).
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.util.proc import stop
from podnet.verify.view import PathView

IPERF_PORT = 5201


class PerfError(RuntimeError):
    """An iperf3 run failed; the message carries iperf3's own error."""


@dataclass(frozen=True)
class PerfTarget:
    """One thing to measure: ``label`` from ``src_ns`` to ``dst_ip`` served in ``dst_ns``."""

    label: str
    src_ns: str
    dst_ns: str
    dst_ip: str


@dataclass(frozen=True)
class PerfResult:
    label: str
    runs_gbps: tuple[float, ...]
    retransmits: tuple[int, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.runs_gbps) if self.runs_gbps else 0.0


@dataclass(frozen=True)
class PerfReport:
    results: tuple[PerfResult, ...]
    baseline: str
    seconds: int
    repetitions: int

    def ratio(self, label: str) -> float:
        base = self.result(self.baseline).median
        return self.result(label).median / base if base else 0.0

    def result(self, label: str) -> PerfResult:
        return next(r for r in self.results if r.label == label)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "seconds": self.seconds,
            "repetitions": self.repetitions,
            "results": [
                {
                    "label": r.label,
                    "runsGbps": [round(x, 3) for x in r.runs_gbps],
                    "medianGbps": round(r.median, 3),
                    "ratioToHost": round(self.ratio(r.label), 3),
                    "retransmits": list(r.retransmits),
                }
                for r in self.results
            ],
        }


def parse_iperf(output: str) -> tuple[float, int]:
    """(Gbit/s received, retransmits) from ``iperf3 -J`` output; PerfError with iperf3's message."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as e:
        raise PerfError(f"iperf3 printed no JSON: {output.strip()[:200]}") from e
    if data.get("error"):
        raise PerfError(f"iperf3: {data['error']}")
    end = data.get("end", {})
    received = end.get("sum_received", {}).get("bits_per_second")
    if received is None:
        raise PerfError("iperf3 JSON has no end.sum_received")
    return float(received) / 1e9, int(end.get("sum_sent", {}).get("retransmits", 0) or 0)


def run_iperf(target: PerfTarget, seconds: int, port: int = IPERF_PORT) -> tuple[float, int]:
    """One bounded iperf3 run; the server is a one-off and is killed by PID if it lingers."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            target.dst_ns,
            "iperf3",
            "-s",
            "-1",
            "-B",
            target.dst_ip,
            "-p",
            str(port),
            "--forceflush",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_server(server)
        client = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                target.src_ns,
                "iperf3",
                "-c",
                target.dst_ip,
                "-p",
                str(port),
                "-t",
                str(seconds),
                "-J",
                "--connect-timeout",
                "3000",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 20,
        )
        return parse_iperf(client.stdout or client.stderr)
    finally:
        _kill(server)


def _wait_server(server: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Wait for iperf3's "Server listening" line, bounded; select() keeps the read from blocking."""
    assert server.stdout is not None
    fd = server.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            seen += chunk
            if b"listening" in seen.lower():
                return
            if not chunk and server.poll() is not None:
                break
    raise PerfError(f"iperf3 server did not start listening: {seen.decode(errors='replace').strip()[:200]}")


def _kill(proc: subprocess.Popen[Any]) -> None:
    stop(proc, signal.SIGTERM)


RETRIES = 3  # a run can be cut by a transient hiccup; an IPv6 address may be tentative a moment


def _run_retrying(target: PerfTarget, seconds: int, say: Callable[[PerfError], None]) -> tuple[float, int]:
    for attempt in range(RETRIES):
        try:
            return run_iperf(target, seconds)
        except PerfError as e:
            if attempt == RETRIES - 1:
                raise
            say(e)
            time.sleep(1.0)
    raise AssertionError("unreachable")


def measure(
    targets: Sequence[PerfTarget],
    repetitions: int = 5,
    seconds: int = 3,
    progress: Callable[[str], None] = lambda _m: None,
) -> PerfReport:
    """Interleaved repetitions of every target; the first target is the baseline."""
    runs: dict[str, list[float]] = {t.label: [] for t in targets}
    retrans: dict[str, list[int]] = {t.label: [] for t in targets}
    for rep in range(repetitions):
        for t in targets:
            where = f"run {rep + 1}/{repetitions} {t.label}"
            gbps, rt = _run_retrying(t, seconds, lambda e, w=where: progress(f"{w} failed ({e}); retrying"))
            runs[t.label].append(gbps)
            retrans[t.label].append(rt)
            progress(f"run {rep + 1}/{repetitions} {t.label}: {gbps:.2f} Gbit/s")
    results = tuple(PerfResult(t.label, tuple(runs[t.label]), tuple(retrans[t.label])) for t in targets)
    return PerfReport(results, targets[0].label, seconds, repetitions)


def plot(report: PerfReport, path: Path, title: str) -> Path:
    """A bar chart of the medians (min-max whiskers) with each bar's ratio to the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in report.results]
    medians = [r.median for r in report.results]
    lows = [r.median - min(r.runs_gbps) for r in report.results]
    highs = [max(r.runs_gbps) - r.median for r in report.results]
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = ["#777777", "#1f77b4", "#2ca02c", "#d62728", "#9467bd"]
    bars = ax.bar(labels, medians, yerr=[lows, highs], capsize=6, color=colors[: len(labels)])
    for bar, r in zip(bars, report.results, strict=True):
        ax.annotate(
            f"{r.median:.1f} Gbit/s\n{report.ratio(r.label):.0%}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
            xytext=(0, 4),
            textcoords="offset points",
        )
    ax.set_ylabel("TCP throughput (Gbit/s, median)")
    ax.set_title(title)
    ax.set_ylim(0, max(medians or [1]) * 1.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.resolve()


def lab_targets(view: PathView, family: int = 4) -> list[PerfTarget]:
    """host-to-host (first two nodes with pods) and pod-to-pod across them, labelled by mode; by
    IPv6 (``family`` 6) between the nodes' and the pods' IPv6 addresses."""
    nodes = [n for n in view.nodes if view.pods_on(n)]
    if len(nodes) < 2:
        raise PerfError(f"lab {view.name} needs pods on two nodes to compare host and pod throughput")
    a, b = nodes[0], nodes[1]
    pa, pb = view.pods_on(a)[0], view.pods_on(b)[0]
    routing = view.agent_status(a).get("routing") or {}
    mode = f"tunnel {routing.get('tunnelProtocol')}" if routing.get("mode") == "tunnel" else "native"
    pod_ip = next(
        (ip for ip in view.pods[pb].get("ips") or [] if ipaddress.ip_address(ip).version == family), None
    )
    if pod_ip is None:
        raise PerfError(f"pod {pb} has no IPv{family} address (is ipv6.enabled set for lab {view.name}?)")
    tag = " IPv6" if family == 6 else ""
    return [
        PerfTarget(f"host{tag} {a}->{b}", view.ns(a), view.ns(b), str(view.node_ip(b, family))),
        PerfTarget(f"pod{tag} {pa}->{pb} ({mode})", view.ns(pa), view.ns(pb), pod_ip),
    ]
