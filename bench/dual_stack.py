"""IPv6 pod-to-pod throughput against IPv6 host-to-host, per routing mode, each in one run.

examples/dual-stack.yaml (two nodes on one L2 with IPv4 and IPv6 addresses) three times: native
routing (IPv6 direct routes), VXLAN over the IPv4 underlay (IPv6 pods inside IPv4 UDP, route MTU
1450) and VXLAN over the IPv6 underlay (``underlayProtocol: ipv6``, route MTU 1430). In each lab
iperf3 runs host-to-host between the nodes' IPv6 addresses and pod-to-pod between the pods' IPv6
addresses, interleaved (``podnet.verify.perf.measure``); the ratio of the medians is the figure,
as each pair shares the same moments of this shared machine. Also IPv4 pod-to-pod in the native
lab, for comparison; then examples/dual-stack-bgp.yaml (native across two routers, pod CIDRs
learnt by BGP in both families: host-to-host crosses the same routers) and examples/ipv6-only.yaml
(no IPv4 anywhere) natively with BGP and in VXLAN over IPv6. Writes bench/results/dual_stack.json.
Run as root after scripts/setup.sh:
    .venv/bin/python bench/dual_stack.py [--repetitions 5] [--seconds 3]
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from typing import Any

from benchlib import perf_arguments, write_json

from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology
from podnet.lab.view import LabView
from podnet.verify.perf import lab_targets, measure

MODES: dict[str, tuple[str, list[str]]] = {  # mode: (topology, --set overrides)
    "native": ("dual-stack", []),
    "vxlan over IPv4": ("dual-stack", ["routingMode=tunnel", "autoDirectNodeRoutes=false"]),
    "vxlan over IPv6": (
        "dual-stack",
        ["routingMode=tunnel", "autoDirectNodeRoutes=false", "underlayProtocol=ipv6"],
    ),
    "native + BGP, routers": ("dual-stack-bgp", []),
    "IPv6-only, BGP": ("ipv6-only", []),
    "IPv6-only, vxlan": ("ipv6-only", ["routingMode=tunnel", "bgp.enabled=false"]),
}
LAB = "bds-perf"


def run_mode(
    topology: str, sets: list[str], repetitions: int, seconds: int, families: tuple[int, ...]
) -> dict[str, Any]:
    topo = apply_overrides(dataclasses.replace(load_topology(topology), name=LAB), sets)
    bring_down(LAB)
    bring_up(topo)
    found: dict[str, Any] = {}
    try:
        with LabView(LAB) as view:
            for family in families:
                report = measure(lab_targets(view, family), repetitions, seconds, lambda _m: None)
                host, pod = report.results
                found[f"ipv{family}"] = {
                    "host_gbps": round(host.median, 3),
                    "pod_gbps": round(pod.median, 3),
                    "ratio": round(report.ratio(pod.label), 3),
                }
    finally:
        bring_down(LAB)
    return found


def main() -> int:
    args = perf_arguments(__doc__)
    rows: dict[str, Any] = {}
    for mode, (topology, sets) in MODES.items():
        print(f"lab {LAB}: {mode} ({topology} {' '.join(sets)})", file=sys.stderr, flush=True)
        families = (6, 4) if mode == "native" else (6,)
        rows[mode] = run_mode(topology, sets, args.repetitions, args.seconds, families)
    print(f"\niperf3 medians of {args.repetitions} x {args.seconds} s, host and pod interleaved per mode")
    print(f"{'mode':<24}{'family':>7}{'host Gbit/s':>13}{'pod Gbit/s':>12}{'pod / host':>12}")
    for mode, by_family in rows.items():
        for family, r in by_family.items():
            print(f"{mode:<24}{family:>7}{r['host_gbps']:>13}{r['pod_gbps']:>12}{r['ratio']:>12}")
    write_json(
        "bench/results/dual_stack.json",
        {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "repetitions": args.repetitions,
            "seconds": args.seconds,
            "modes": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
