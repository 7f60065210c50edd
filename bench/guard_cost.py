"""What the pod guard costs (issue 11): CNI ADD/DEL latency and pod-to-pod throughput, guard on
against guard off, interleaved in one run on one lab.

Brings up examples/l2.yaml in tunnel mode (etcd with mutual TLS, as every lab), then alternates
"on" (``enableSourceIPVerification`` and ``podGuard.enabled``, the defaults) and "off" blocks,
switching live with ``podnet config set``. Per block: 10 ADDs then 10 DELs through the lab's
installed plugin (as a runtime runs it), and one iperf3 pod-to-pod run across nodes. Prints
medians and ratios, writes bench/results/guard_cost.json. Run as root after scripts/setup.sh:
    .venv/bin/python bench/guard_cost.py [--blocks 6] [--seconds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.util import netns
from podnet.verify.perf import parse_iperf

LAB = "bguard"
PODNET = str(Path(sys.executable).with_name("podnet"))
SETTINGS = {"on": ["enableSourceIPVerification=true", "podGuard.enabled=true"],
            "off": ["enableSourceIPVerification=false", "podGuard.enabled=false"]}  # fmt: skip


def switch(mode: str) -> None:
    argv = [PODNET, "config", "set", "--lab", LAB, *SETTINGS[mode]]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise SystemExit(f"podnet config set failed: {res.stdout} {res.stderr}")


def cni(command: str, cid: str, pod_ns: str) -> float:
    env = {
        "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": str(netns.NETNS_DIR / pod_ns),
        "CNI_IFNAME": "eth0", "CNI_PATH": str(cl.cni_bin_dir(LAB)),
        "PATH": os.environ.get("PATH", "/usr/bin"),
    }  # fmt: skip
    t0 = time.perf_counter()
    argv = ["ip", "netns", "exec", st.ns_name(LAB, "node1"), cl.cni_binary(LAB)]
    conf = json.dumps(cl.netconf(LAB, "node1"))
    res = subprocess.run(argv, input=conf, env=env, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise SystemExit(f"CNI {command} {cid} failed: {res.stdout} {res.stderr}")
    return time.perf_counter() - t0


def iperf(src: str, dst: str, dst_ip: str, seconds: int) -> float:
    serve = ["ip", "netns", "exec", st.ns_name(LAB, dst), "iperf3", "-s", "-1", "-p", "5301"]
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        client = ["ip", "netns", "exec", st.ns_name(LAB, src), "iperf3", "-J", "-c", dst_ip, "-p", "5301"]
        argv = [*client, "-t", str(seconds)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        return parse_iperf(out.stdout)[0]
    finally:
        server.kill()
        server.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    topo = apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"])
    topo = dataclasses.replace(topo, name=LAB)
    bring_down(LAB)
    bring_up(topo)
    pods = [st.ns_name(LAB, f"gc{i}") for i in range(10)]
    state = st.LabState.load(LAB)
    assert state is not None
    state.namespaces.extend(pods)  # write-ahead: `podnet lab down bguard` finds them after a crash
    state.save()
    results: dict[str, dict[str, list[float]]] = {m: {"ADD": [], "DEL": [], "Gbit/s": []} for m in SETTINGS}
    try:
        for ns in pods:
            netns.create(ns)
        src = next(p.name for p in topo.pods if p.node == "node1")
        dst = next(p.name for p in topo.pods if p.node == "node2")
        dst_ip = str(state.info["podIPs"][dst]["ips"][0])
        for block in range(args.blocks):
            for mode in ("on", "off") if block % 2 == 0 else ("off", "on"):
                switch(mode)
                for i, ns in enumerate(pods):
                    results[mode]["ADD"].append(cni("ADD", f"gc{block}-{i}", ns))
                for i, ns in enumerate(pods):
                    results[mode]["DEL"].append(cni("DEL", f"gc{block}-{i}", ns))
                results[mode]["Gbit/s"].append(iperf(src, dst, dst_ip, args.seconds))
    finally:
        for ns in pods:
            netns.remove(ns)
        bring_down(LAB)
    summary = {m: {k: round(statistics.median(v) * (1000 if k != "Gbit/s" else 1), 3) for k, v in r.items()}
               for m, r in results.items()}  # fmt: skip
    ratios = {k: round(summary["on"][k] / summary["off"][k], 3) for k in summary["on"]}
    print(f"{'':6} {'ADD p50 ms':>11} {'DEL p50 ms':>11} {'pod-pod Gbit/s':>15}")
    for mode in ("off", "on"):
        s = summary[mode]
        print(f"{mode:6} {s['ADD']:>11.2f} {s['DEL']:>11.2f} {s['Gbit/s']:>15.2f}")
    print(f"{'on/off':6} {ratios['ADD']:>11.3f} {ratios['DEL']:>11.3f} {ratios['Gbit/s']:>15.3f}")
    out = Path(__file__).resolve().parent / "results" / "guard_cost.json"
    out.parent.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "blocks": args.blocks,
        "medians": summary,
        "onOverOff": ratios,
        "samples": results,
    }
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
