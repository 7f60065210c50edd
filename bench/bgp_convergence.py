"""BGP convergence on leaf-spine: a node's pod CIDR into, and out of, every router's kernel table.

Brings up examples/leaf-spine.yaml in native mode with BGP (ExaBGP on the nodes, BIRD on the 5
routers), then for each round: stops one node's agent as a departure (SIGUSR1; SIGTERM is a
restart, which the routers ride out with graceful restart) and times until its
pod CIDR is gone from every router's kernel table ("withdraw"), then starts the agent again and
times from the spawn until the CIDR is in every router's table ("announce"; this includes the
agent's own start: Python, etcd, node setup, ExaBGP). Routers are polled over netlink every 5 ms.
Goal: <= 1 s for both. Prints the figures and writes bench/results/bgp_convergence.json.
Run as root: .venv/bin/python bench/bgp_convergence.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology

RTPROT_BIRD = 12
POLL = 0.005
TIMEOUT = 60.0
EXIT_TIMEOUT = 10.0  # seconds for a stopped agent to exit
GOAL = 1.0


def bird_prefixes(ipr: IPRoute) -> set[str]:
    out = set()
    for r in ipr.route("dump", table=254):
        if r.get("proto") == RTPROT_BIRD and r.get("dst_len"):
            out.add(f"{r.get_attr('RTA_DST')}/{r['dst_len']}")
    return out


def wait_routers(sockets: dict[str, IPRoute], cidr: str, present: bool, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` until each router has (or no longer has) ``cidr``."""
    seen: dict[str, float] = {}
    deadline = t0 + TIMEOUT
    while len(seen) < len(sockets):
        for name, ipr in sockets.items():
            if name not in seen and (cidr in bird_prefixes(ipr)) == present:
                seen[name] = time.monotonic() - t0
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{cidr} not {'in' if present else 'out of'} every router after {TIMEOUT}s: {seen}"
            )
        time.sleep(POLL)
    return seen


def one_round(topo: Topology, node: str, cidr: str, sockets: dict[str, IPRoute]) -> dict[str, Any]:
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(f"agent-{node}")
    assert rec is not None and rec.running()
    t0 = time.monotonic()
    os.kill(rec.pid, signal.SIGUSR1)
    withdraw = wait_routers(sockets, cidr, False, t0)
    stop_deadline = time.monotonic() + EXIT_TIMEOUT
    while rec.running() and time.monotonic() < stop_deadline:
        time.sleep(0.01)
    if rec.running():  # it ignored SIGUSR1: the recorded PID, and only it, gets SIGKILL
        os.kill(rec.pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + EXIT_TIMEOUT
        while rec.running() and time.monotonic() < kill_deadline:
            time.sleep(0.01)
        if rec.running():
            raise SystemExit(f"agent-{node} (pid {rec.pid}) is still running after SIGKILL")
    t1 = time.monotonic()
    cl.start_agent(topo, state, topo.host(node))
    announce = wait_routers(sockets, cidr, True, t1)
    cl.wait_agents_ready(topo, state)
    return {"withdraw": max(withdraw.values()), "announce": max(announce.values()),
            "withdrawPerRouter": withdraw, "announcePerRouter": announce}  # fmt: skip


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--node", default="node6")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bgp_convergence.json")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (the lab makes network namespaces)", file=sys.stderr)
        return 2
    topo = apply_overrides(load_topology("leaf-spine"), ["routingMode=native", "bgp.enabled=true"])
    topo = dataclasses.replace(topo, name="bench-bgp")
    bring_down(topo.name)
    started = time.monotonic()
    bring_up(topo)
    sockets: dict[str, IPRoute] = {}
    try:
        print(f"lab up in {time.monotonic() - started:.1f}s")
        cidr = cl.agent_request(topo.name, args.node, {"op": "status"})["node"]["podCIDRs"][0]
        sockets = {r.name: IPRoute(netns=st.ns_name(topo.name, r.name)) for r in topo.routers}
        wait_routers(sockets, cidr, True, time.monotonic())
        rounds = []
        for i in range(args.rounds):
            r = one_round(topo, args.node, cidr, sockets)
            rounds.append(r)
            w, a = r["withdraw"] * 1000, r["announce"] * 1000
            print(f"round {i + 1}: withdraw {w:.0f} ms, announce {a:.0f} ms")
    finally:
        for ipr in sockets.values():
            ipr.close()
        bring_down(topo.name)
    result = {
        "topology": "leaf-spine (2 spines, 3 leaves, 6 nodes), native routing, BGP",
        "speaker": "exabgp (node) -> bird2 (routers)",
        "node": args.node,
        "podCIDR": cidr,
        "routers": [r.name for r in topo.routers],
        "goalSeconds": GOAL,
        "withdrawSeconds": summary([r["withdraw"] for r in rounds]),
        "announceSeconds": summary([r["announce"] for r in rounds]),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for what in ("withdraw", "announce"):
        s = result[f"{what}Seconds"]
        verdict = "meets" if s["max"] <= GOAL else "misses"
        median, worst = s["median"] * 1000, s["max"] * 1000
        print(f"{what:8s} median {median:.0f} ms, max {worst:.0f} ms ({verdict} the {GOAL:g} s goal)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
