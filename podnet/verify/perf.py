"""``podnet perf``: host-to-host over the underlay against pod-to-pod across nodes, by ONE method
that ``podnet perf``, the demo and every benchmark under bench/ share (issue 31):

- every run is a real iperf3 (throughput) or sockperf ping-pong (request/response, TCP_RR's
  question) between lab namespaces: a one-off server in the destination, a bounded client in
  the source, both killed by PID if they linger;
- the sender and the receiver are pinned to the same CPUs in every run (client on CPU 0, server
  on CPU 1 with ``taskset``): a veth hands packets to the backlog of the CPU that sent them, so
  where the two land decides the figure more than the datapath does, and unpinned runs mix
  placements at random;
- iperf3 discards its first second (``-O 1``, slow start and the first ARP/ND) and sockperf its
  warm-up; throughput is measured in both directions (``-R``: the server sends) and, when asked,
  with several streams (``-P``);
- repetitions are interleaved (each repetition runs every metric on every target, host first), and
  a target's ratio is the median of its per-repetition ratios to the host run next to it, so a
  slow moment of the machine falls on both sides of a ratio. The spread of those ratios (min..max)
  is reported; wider than ``WIDE`` and the report says the run cannot conclude.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.specs import routing as routing_spec
from podnet.util.proc import stop
from podnet.verify.view import PathView, agent_document

IPERF_PORT = 5201
RR_PORT = 5301
WIDE = 0.10  # a spread of per-repetition ratios wider than this cannot tell a 0.95 from a 1.0
CLIENT_CPU, SERVER_CPU = 0, 1


class PerfError(RuntimeError):
    """A run failed; the message carries the tool's own error."""


@dataclass(frozen=True)
class PerfTarget:
    """One thing to measure: ``label`` from ``src_ns`` to ``dst_ip`` served in ``dst_ns``."""

    label: str
    src_ns: str
    dst_ns: str
    dst_ip: str


@dataclass(frozen=True)
class Metric:
    """What one run measures: TCP throughput (``streams``, ``reverse``: the server sends) in
    Gbit/s, or request/response transactions per second (``rr``)."""

    name: str
    streams: int = 1
    reverse: bool = False
    rr: bool = False

    @property
    def unit(self) -> str:
        return "transactions/s" if self.rr else "Gbit/s"


FORWARD = Metric("forward")
REVERSE = Metric("reverse", reverse=True)
RR = Metric("request/response", rr=True)


def parallel(streams: int) -> Metric:
    return Metric(f"forward -P {streams}", streams=streams)


@dataclass(frozen=True)
class PerfOptions:
    repetitions: int = 5
    seconds: int = 3
    metrics: tuple[Metric, ...] = (FORWARD, REVERSE, RR)
    pin: bool = True  # client and server on their CPUs (when the machine has two)
    omit: int = 1  # iperf3 -O: seconds of warm-up discarded


def options_for(streams: int = 0) -> PerfOptions:
    """The method's metrics, with ``streams`` parallel streams as one more (0: none)."""
    extra = (parallel(streams),) if streams > 1 else ()
    return PerfOptions(metrics=(FORWARD, REVERSE, *extra, RR))


@dataclass(frozen=True)
class PerfResult:
    label: str
    runs_gbps: tuple[float, ...]  # the runs of the metric (Gbit/s, or transactions/s for rr)
    retransmits: tuple[int, ...] = ()
    metric: Metric = FORWARD
    ratios: tuple[float, ...] = ()  # per repetition, to the baseline's run of that repetition

    @property
    def median(self) -> float:
        return statistics.median(self.runs_gbps) if self.runs_gbps else 0.0

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0

    @property
    def spread(self) -> tuple[float, float]:
        return (min(self.ratios), max(self.ratios)) if self.ratios else (0.0, 0.0)

    @property
    def wide(self) -> bool:
        low, high = self.spread
        return high - low > WIDE


@dataclass(frozen=True)
class PerfReport:
    results: tuple[PerfResult, ...]  # the first metric (forward, one stream): what older callers read
    baseline: str
    seconds: int
    repetitions: int
    metrics: tuple[PerfResult, ...] = field(default=())  # every metric of every target

    def ratio(self, label: str, metric: str = "forward") -> float:
        if label == self.baseline:
            return 1.0
        return self.of(label, metric).ratio

    def result(self, label: str) -> PerfResult:
        return next(r for r in self.results if r.label == label)

    def of(self, label: str, metric: str) -> PerfResult:
        return next(r for r in self.metrics or self.results if r.label == label and r.metric.name == metric)

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "seconds": self.seconds,
            "repetitions": self.repetitions,
            "method": METHOD,
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
            "metrics": [_metric_json(self, r) for r in self.metrics],
        }


METHOD = (
    "client on CPU 0, server on CPU 1 (taskset); iperf3 -O 1 (first second discarded) for throughput, "
    "sockperf ping-pong for request/response; repetitions interleaved, host first; ratio = median of "
    f"per-repetition ratios to the host run beside it; spread wider than {WIDE} cannot conclude"
)


def _metric_json(report: PerfReport, r: PerfResult) -> dict[str, Any]:
    low, high = r.spread
    doc: dict[str, Any] = {
        "label": r.label,
        "metric": r.metric.name,
        "unit": r.metric.unit,
        "runs": [round(x, 3) for x in r.runs_gbps],
        "median": round(r.median, 3),
    }
    if r.label != report.baseline:
        doc |= {"ratio": round(r.ratio, 3), "spread": [round(low, 3), round(high, 3)], "wide": r.wide}
    return doc


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


VALID = re.compile(r"\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)")


def parse_sockperf(output: str) -> float:
    """Transactions per second of a ``sockperf ping-pong`` run (after its warm-up)."""
    found = VALID.search(output)
    if found is None:
        raise PerfError(f"sockperf printed no result: {output.strip()[-200:]}")
    seconds, received = float(found.group(1)), int(found.group(3))
    if seconds <= 0 or received == 0:
        raise PerfError(f"sockperf got no answers in {seconds}s: {output.strip()[-200:]}")
    return received / seconds


def _pinned(cpu: int, pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu)] if pin and (os.cpu_count() or 1) > 1 else []


def run_iperf(
    target: PerfTarget,
    seconds: int,
    port: int = IPERF_PORT,
    metric: Metric = FORWARD,
    pin: bool = True,
    omit: int = 1,
) -> tuple[float, int]:
    """One bounded iperf3 run; the server is a one-off and is killed by PID if it lingers."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            target.dst_ns,
            *_pinned(SERVER_CPU, pin),
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
        _wait_server(server, b"listening")
        extra = (["-P", str(metric.streams)] if metric.streams > 1 else []) + (
            ["-R"] if metric.reverse else []
        )
        client = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                target.src_ns,
                *_pinned(CLIENT_CPU, pin),
                "iperf3",
                "-c",
                target.dst_ip,
                "-p",
                str(port),
                "-t",
                str(seconds),
                "-O",
                "1",
                "-J",
                "--connect-timeout",
                "3000",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 25,
        )
        return parse_iperf(client.stdout or client.stderr)
    finally:
        _kill(server)


def run_rr(target: PerfTarget, seconds: int, port: int = RR_PORT, pin: bool = True) -> float:
    """One bounded sockperf ping-pong over TCP: one request in flight, its answer awaited."""
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            target.dst_ns,
            *_pinned(SERVER_CPU, pin),
            "sockperf",
            "server",
            "--tcp",
            "-i",
            target.dst_ip,
            "-p",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_server(server, b"listen on")
        client = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                target.src_ns,
                *_pinned(CLIENT_CPU, pin),
                "sockperf",
                "ping-pong",
                "--tcp",
                "-i",
                target.dst_ip,
                "-p",
                str(port),
                "-t",
                str(seconds),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 25,
        )
        return parse_sockperf(client.stdout + client.stderr)
    finally:
        _kill(server)


def _wait_server(server: subprocess.Popen[bytes], ready: bytes, timeout: float = 5.0) -> None:
    """Wait for the server's ``ready`` line, bounded; select() keeps the read from blocking."""
    assert server.stdout is not None
    fd = server.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            chunk = os.read(fd, 4096)
            seen += chunk
            if ready in seen.lower():
                return
            if not chunk and server.poll() is not None:
                break
    raise PerfError(f"the server did not start listening: {seen.decode(errors='replace').strip()[:200]}")


def _kill(proc: subprocess.Popen[Any]) -> None:
    stop(proc, signal.SIGTERM)


RETRIES = 3  # a run can be cut by a transient hiccup; an IPv6 address may be tentative a moment


def run_once(target: PerfTarget, metric: Metric, seconds: int, opts: PerfOptions) -> tuple[float, int]:
    if metric.rr:
        return run_rr(target, seconds, pin=opts.pin), 0
    return run_iperf(target, seconds, metric=metric, pin=opts.pin, omit=opts.omit)


def _run_retrying(
    target: PerfTarget, metric: Metric, seconds: int, opts: PerfOptions, say: Callable[[PerfError], None]
) -> tuple[float, int]:
    for attempt in range(RETRIES):
        try:
            return run_once(target, metric, seconds, opts)
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
    options: PerfOptions | None = None,
) -> PerfReport:
    """Interleaved repetitions of every metric on every target; the first target is the baseline
    (``options`` decides the metrics and pinning; its repetitions and seconds are the arguments')."""
    opts = options or PerfOptions()
    runs: dict[tuple[str, str], list[float]] = {}
    retrans: dict[tuple[str, str], list[int]] = {}
    for rep in range(repetitions):
        for metric in opts.metrics:
            for t in targets:
                where = f"run {rep + 1}/{repetitions} {t.label} {metric.name}"
                value, rt = _run_retrying(
                    t, metric, seconds, opts, lambda e, w=where: progress(f"{w} failed ({e}); retrying")
                )
                runs.setdefault((t.label, metric.name), []).append(value)
                retrans.setdefault((t.label, metric.name), []).append(rt)
                shown = f"{value:.0f} {metric.unit}" if metric.rr else f"{value:.2f} Gbit/s"
                progress(f"{where}: {shown}")
    base = targets[0].label
    every = []
    for metric in opts.metrics:
        for t in targets:
            mine, host = runs[(t.label, metric.name)], runs[(base, metric.name)]
            ratios = tuple(a / b for a, b in zip(mine, host, strict=True) if b) if t.label != base else ()
            every.append(
                PerfResult(t.label, tuple(mine), tuple(retrans[(t.label, metric.name)]), metric, ratios)
            )
    first = opts.metrics[0].name
    primary = tuple(r for r in every if r.metric.name == first)
    return PerfReport(primary, base, seconds, repetitions, tuple(every))


def combine(reports: dict[str, PerfReport], baseline: str = "host") -> PerfReport:
    """Several labs' reports as one, for a table and a plot: the first report's host runs as
    ``baseline``, each report's other target under its key (one non-baseline target each), every
    ratio still the one paired with its own lab's host runs."""
    first = next(iter(reports.values()))
    every: list[PerfResult] = []
    for r in first.metrics or first.results:
        if r.label == first.baseline:
            every.append(PerfResult(baseline, r.runs_gbps, r.retransmits, r.metric))
    for label, rep in reports.items():
        for r in rep.metrics or rep.results:
            if r.label != rep.baseline:
                every.append(PerfResult(label, r.runs_gbps, r.retransmits, r.metric, r.ratios))
    name = (first.metrics or first.results)[0].metric.name
    primary = tuple(r for r in every if r.metric.name == name)
    return PerfReport(primary, baseline, first.seconds, first.repetitions, tuple(every))


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
    routing = agent_document(view, a).routing
    spec = routing_spec.spec_of(routing.to_json())
    mode = f"{spec.name} {routing.tunnel_protocol}" if spec.tunnels else spec.name
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
