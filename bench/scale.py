"""Scale: real agents among 100 and 1000 simulated nodes, on a real etcd (issue 10.12).

Brings up examples/l2.yaml in tunnel mode (3 real nodes: agents, operator, etcd in namespaces)
with a large pool, then starts ``bench/scale_sim.py`` in the control-plane namespace, which
writes complete node registrations into the lab's etcd. For N = 100 and 1000 it measures:

- join storm: the simulator registers nodes until there are N; the time until every real
  agent's kernel holds a route to every simulated node's pod CIDR, and etcd's writes per second
  meanwhile (puts + transactions, from etcd's own counters);
- join -> route: one more node registers; the time until node1's kernel has its route
  (5 joins, median), polled over netlink every 2 ms;
- full plan + apply: node1's peer routes, neighbours and FDB entries are flushed, then a round is
  forced (SIGHUP); the agent's own timing of that round (plan, apply) from its status;
- node1's agent RSS.

Goals: plan+apply for 1000 peers <= 2 s, join -> route <= 1 s at 1000 nodes, RSS <= 100 MB.
Prints the figures and writes bench/results/scale.json. Run as root after scripts/setup.sh:
    .venv/bin/python bench/scale.py [--sizes 100 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from podnet import owned
from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.controlplane import client_tls, scheme
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology

HERE = Path(__file__).resolve().parent
SETTINGS = [
    "routingMode=tunnel",
    "autoDirectNodeRoutes=false",
    "ipam.operator.clusterPoolIPv4PodCIDRList=[10.64.0.0/10]",
    "ipam.operator.clusterPoolIPv4MaskSize=24",
]
POLL = 0.002
TIMEOUT = 180.0
GOALS = {"planApplySeconds": 2.0, "joinToRouteSeconds": 1.0, "rssMB": 100.0}


class Simulator:
    """bench/scale_sim.py in the lab's control-plane namespace, driven line by line."""

    def __init__(self, topo: Topology) -> None:
        cp = topo.control_plane
        tls = client_tls(topo, "lab")
        extra = ["--endpoint", f"{scheme(topo)}://127.0.0.1:2379"]
        extra += ["--tls", tls.ca, tls.cert, tls.key] if tls else []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", st.ns_name(topo.name, cp.name), sys.executable,
             str(HERE / "scale_sim.py"), "--node-ip", str(cp.primary.address.ip), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the simulator died answering {command!r}")
        return dict(json.loads(line))

    def close(self) -> None:
        try:
            self.ask("quit")
        finally:
            self.proc.wait(timeout=30)


def peer_routes(ipr: IPRoute) -> set[str]:
    """podnet's routes on the tunnel device: one per reachable peer pod CIDR."""
    names = {int(m["index"]): m.get_attr("IFLA_IFNAME") for m in ipr.link("dump")}
    return {
        f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
        for r in ipr.route("dump", table=254, proto=owned.ROUTE_PROTOCOL)
        if names.get(r.get_attr("RTA_OIF")) == owned.VXLAN_DEV
    }


def wait_routes(sockets: dict[str, IPRoute], count: int, t0: float) -> dict[str, float]:
    done: dict[str, float] = {}
    while len(done) < len(sockets):
        for node, ipr in sockets.items():
            if node not in done and len(peer_routes(ipr)) >= count:
                done[node] = time.monotonic() - t0
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"agents did not converge on {count} peer routes in {TIMEOUT}s: {done}")
        time.sleep(0.01)
    return done


def join_to_route(sim: Simulator, ipr: IPRoute, index: int) -> float:
    cidr = f"10.{100 + (index >> 8)}.{index & 0xFF}.0/24"
    t0 = time.monotonic()
    sim.ask("add 1")
    while cidr not in peer_routes(ipr):
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"no route to {cidr} after {TIMEOUT}s")
        time.sleep(POLL)
    return time.monotonic() - t0


def full_round(topo: Topology, ipr: IPRoute, peers: int) -> dict[str, float]:
    """Flush node1's peer datapath, force a round, and read the agent's timing of it."""
    before = cl.agent_request(topo.name, "node1", {"op": "status"})["reconciles"]
    ns = st.ns_name(topo.name, "node1")
    for cmd in (["ip", "route", "flush", "proto", str(owned.ROUTE_PROTOCOL), "dev", owned.VXLAN_DEV],
                ["ip", "neigh", "flush", "dev", owned.VXLAN_DEV, "nud", "permanent"],
                ["bridge", "fdb", "flush", "dev", owned.VXLAN_DEV]):  # fmt: skip
        subprocess.run(["ip", "netns", "exec", ns, *cmd], check=False, capture_output=True, timeout=60)
    state = st.LabState.load(topo.name)
    assert state is not None
    agent = state.process("agent-node1")
    assert agent is not None
    os.kill(agent.pid, signal.SIGHUP)
    t0 = time.monotonic()
    while True:
        status = cl.agent_request(topo.name, "node1", {"op": "status"}, timeout=30)
        timing = status.get("lastRound") or {}
        if status["reconciles"] > before and timing.get("changes", 0) >= peers * 3:
            break
        if time.monotonic() - t0 > TIMEOUT:
            raise SystemExit(f"no full round after {TIMEOUT}s: {timing}")
        time.sleep(0.05)
    assert len(peer_routes(ipr)) >= peers
    return {k: float(timing[k]) for k in ("planSeconds", "applySeconds", "changes")}


def rss_mb(topo: Topology, node: str) -> float:
    state = st.LabState.load(topo.name)
    assert state is not None
    agent = state.process(f"agent-{node}")
    assert agent is not None
    for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(topo: Topology, sizes: list[int]) -> list[dict[str, Any]]:
    sim = Simulator(topo)
    sockets = {n.name: IPRoute(netns=st.ns_name(topo.name, n.name)) for n in topo.nodes}
    real_peers = len(topo.nodes) - 1
    rows = []
    added = 0
    try:
        for size in sizes:
            before = sim.ask("metrics")
            t0 = time.monotonic()
            written = sim.ask(f"add {size - added}")
            added = size
            converged = wait_routes(sockets, size + real_peers, t0)
            elapsed = max(converged.values())
            after = sim.ask("metrics")
            writes = (after["puts"] - before["puts"]) + (after["txns"] - before["txns"])
            joins = []
            for _ in range(5):
                joins.append(join_to_route(sim, sockets["node1"], added))
                added += 1
                time.sleep(0.2)
            peers = added + real_peers
            timing = full_round(topo, sockets["node1"], peers)
            row = {
                "nodes": size,
                "stormWriteSeconds": round(written["seconds"], 3),
                "stormConvergedSeconds": {k: round(v, 3) for k, v in converged.items()},
                "etcdWritesPerSecond": round(writes / elapsed, 1),
                "joinToRouteSeconds": {
                    "median": round(statistics.median(joins), 4),
                    "max": round(max(joins), 4),
                },
                "planSeconds": round(timing["planSeconds"], 4),
                "applySeconds": round(timing["applySeconds"], 4),
                "planApplySeconds": round(timing["planSeconds"] + timing["applySeconds"], 4),
                "appliedChanges": int(timing["changes"]),
                "rssMB": round(rss_mb(topo, "node1"), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for ipr in sockets.values():
            ipr.close()
        sim.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/scale.py needs root (it builds a lab in network namespaces)", file=sys.stderr)
        return 2
    topo = apply_overrides(load_topology("l2"), SETTINGS)
    topo = dataclasses.replace(topo, name="bscale")
    bring_down(topo.name)
    try:
        bring_up(topo)
        rows = measure(topo, sorted(args.sizes))
    finally:
        bring_down(topo.name)
    print()
    header = ("nodes", "storm", "etcd w/s", "join->route", "plan", "apply", "RSS MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 8, 9, 12, 7, 7, 7), strict=True)))
    for r in rows:
        storm = max(r["stormConvergedSeconds"].values())
        join = r["joinToRouteSeconds"]["median"]
        print(f"{r['nodes']:>6} {storm:>7.2f}s {r['etcdWritesPerSecond']:>9.0f} {join:>11.3f}s "
              f"{r['planSeconds']:>6.3f}s {r['applySeconds']:>6.3f}s {r['rssMB']:>7.1f}")  # fmt: skip
    largest = rows[-1]
    verdict = {
        "planApplySeconds": largest["planApplySeconds"] <= GOALS["planApplySeconds"],
        "joinToRouteSeconds": largest["joinToRouteSeconds"]["median"] <= GOALS["joinToRouteSeconds"],
        "rssMB": largest["rssMB"] <= GOALS["rssMB"],
    }
    print(
        f"goals at {largest['nodes']} nodes: "
        + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in verdict.items())
    )
    out = HERE / "results" / "scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "goals": GOALS, "met": verdict}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
