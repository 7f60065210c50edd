"""Live routing-mode switch under load: tunnel -> native (L2 direct routes) -> tunnel.

On the l2 lab, a long iperf3 TCP stream and a 10 ms ping run between pods on two nodes while
``podnet config set`` switches every agent's routingMode twice. Prints TCP resets (the pods'
TcpEstabResets/TCPAbortOn* counters read just before the first and just after the last switch,
while the stream runs, and whether iperf3 finished cleanly), lost pings, the
longest gap between answered pings, and how long each switch took to converge; writes JSON
(bench/results/mode_switch.json). Goal: 0 resets, longest gap <= 1 s. Run as root.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from typing import Any

from benchlib import write_json

from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns
from podnet.verify.perf import _wait_server as wait_iperf_server  # the one bounded wait for iperf3 -s

TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
NATIVE = ["routingMode=native", "autoDirectNodeRoutes=true"]
RESET_COUNTERS = (
    "TcpEstabResets",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnTimeout",
)


def counters(ns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-asz"], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in RESET_COUNTERS:
            found[parts[0]] = int(parts[1])
    return found


def switch(lab: str, pairs: list[str]) -> float:
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "podnet.cli", "config", "set", "--lab", lab, *pairs],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if res.returncode != 0:
        raise RuntimeError(f"config set {pairs} failed: {res.stdout} {res.stderr}")
    return time.monotonic() - t0


def ping_gaps(output: str, interval: float) -> tuple[int, int, float]:
    """(sent, lost, longest gap in seconds) from ping's per-reply lines."""
    seqs = sorted({int(m) for m in re.findall(r"icmp_seq=(\d+)", output)})
    sent_m = re.search(r"(\d+) packets transmitted", output)
    sent = int(sent_m.group(1)) if sent_m else (seqs[-1] if seqs else 0)
    if not seqs:
        return sent, sent, sent * interval
    longest_missing = max((b - a - 1 for a, b in zip([0, *seqs], [*seqs, sent + 1], strict=False)), default=0)
    return sent, sent - len(seqs), round((longest_missing + 1) * interval, 3)


def run(seconds: int, interval: float, do_switch: bool = True) -> dict[str, Any]:
    topo = dataclasses.replace(apply_overrides(load_topology("l2"), TUNNEL), name="bswitch")
    bring_up(topo)
    try:
        state = st.LabState.load(topo.name)
        assert state is not None
        pods = state.info["podIPs"]
        src, dst = "node1-p1", "node2-p1"
        src_ns, dst_ns = st.ns_name(topo.name, src), st.ns_name(topo.name, dst)
        dst_ip = pods[dst]["ips"][0]
        server = subprocess.Popen(
            ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "--forceflush"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_iperf_server(server)  # "Server listening", bounded (raises if it never comes)
        client = subprocess.Popen(
            ["ip", "netns", "exec", src_ns, "iperf3", "-c", dst_ip, "-t", str(seconds), "-J"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        count = int(seconds / interval)
        pinger = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                src_ns,
                "ping",
                "-n",
                "-i",
                str(interval),
                "-c",
                str(count),
                "-W",
                "1",
                dst_ip,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        switches = []
        third = seconds / 3
        time.sleep(max(third - 1, 0.0))
        # reset counters are read around the switches only: iperf3's own start and close
        # (an abort on its control connection) must not count as the switch's resets
        before = {src: counters(src_ns), dst: counters(dst_ns)}
        time.sleep(1)
        if do_switch:
            switches.append(
                {"to": "native (L2 direct routes)", "seconds": round(switch(topo.name, NATIVE), 3)}
            )
        time.sleep(third)
        if do_switch:
            switches.append({"to": "tunnel (vxlan)", "seconds": round(switch(topo.name, TUNNEL), 3)})
        time.sleep(1)
        after = {src: counters(src_ns), dst: counters(dst_ns)}
        out, err = client.communicate(timeout=seconds + 30)
        ping_out, _ = pinger.communicate(timeout=seconds + 30)
        server.wait(timeout=10)
    finally:
        for proc in ("server", "client", "pinger"):
            p = locals().get(proc)
            if p is not None and p.poll() is None:
                p.kill()
        bring_down(topo.name)
    report = json.loads(out) if out.strip() else {"error": err}
    resets = sum(after[p].get(c, 0) - before[p].get(c, 0) for p in after for c in RESET_COUNTERS)
    sent, lost, gap = ping_gaps(ping_out, interval)
    end = report.get("end", {})
    return {
        "benchmark": "mode_switch",
        "goal": "0 TCP resets, longest gap <= 1 s",
        "iperf3_completed": "error" not in report,
        "iperf3_error": report.get("error"),
        "tcp_resets": resets,
        "tcp_retransmits": end.get("sum_sent", {}).get("retransmits"),
        "throughput_gbps": round(end.get("sum_received", {}).get("bits_per_second", 0) / 1e9, 3),
        "pings_sent": sent,
        "pings_lost": lost,
        "longest_gap_s": gap,
        "switches": switches,
        "goal_met": "error" not in report and resets == 0 and gap <= 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--json", default="bench/results/mode_switch.json")
    args = ap.parse_args(argv)
    leftovers = netns.listed("pn-bswitch-")
    if leftovers:
        bring_down("bswitch")
    baseline = run(args.seconds, args.interval, do_switch=False)
    result = run(args.seconds, args.interval)
    result["baseline_without_switch"] = {
        k: baseline[k]
        for k in ("tcp_resets", "tcp_retransmits", "pings_lost", "longest_gap_s", "throughput_gbps")
    }
    # resets the same stream shows without any switch (iperf3's own close) are not the switch's
    result["tcp_resets_due_to_switch"] = max(0, result["tcp_resets"] - baseline["tcp_resets"])
    result["goal_met"] = (
        result["iperf3_completed"]
        and result["tcp_resets_due_to_switch"] == 0
        and result["longest_gap_s"] <= 1.0
    )
    print(f"baseline (no switch): {result['baseline_without_switch']}")
    for key in (
        "iperf3_completed",
        "tcp_resets",
        "tcp_resets_due_to_switch",
        "tcp_retransmits",
        "throughput_gbps",
        "pings_sent",
        "pings_lost",
        "longest_gap_s",
        "goal_met",
    ):
        print(f"{key:<18} {result[key]}")
    for s in result["switches"]:
        print(f"switch to {s['to']:<28} converged in {s['seconds']} s")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
