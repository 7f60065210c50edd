"""Pod start latency on a real kubelet: podnet against the reference bridge + host-local, one run.

On examples/real-nodes.yaml (kubelet v1.20.2 + containerd 1.6 on node1 and node2, the Kubernetes
datastore, tunnel mode), rounds of N pods bound to node1 are created at once and each pod's time
from its create call to Ready (watched every 50 ms) is taken. Between rounds node1's CNI
configuration is switched (containerd reloads it by itself) between podnet's conflist and a
reference conflist of the upstream bridge + host-local plugins (Debian's containernetworking-
plugins, a private 10.99.0.0/24 inside the node's namespace); the two alternate round by round so
machine noise hits both. Prints p50/p99 per plugin and the ratios podnet/reference, and writes JSON
(bench/results/pod_start.json). Run as root after scripts/build-kube.sh and scripts/runtime-tools.sh.
Goal: podnet's p50 within 10% of the reference's (ratio <= 1.10): podnet's CNI ADD is a small
part of a pod's start, and must stay so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import stats, write_json
from lightkube import Client
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Pod

from podnet.kube.client import connect
from podnet.lab import images, kubeapi, kubenode
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import load_topology

NODE = "node1"
REFERENCE = {
    "cniVersion": "1.0.0",
    "name": "reference",
    "plugins": [
        {"type": "bridge", "bridge": "cni-ref0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]]}},
    ],
}  # fmt: skip


def use_plugin(lab: str, plugin: str) -> None:
    """Point node1's containerd at ``plugin``'s conflist. containerd takes the first file by name
    and watches the directory; podnet's stays, the reference's sorts before it while present, so
    the directory never lacks a configuration (an empty moment leaves the CRI "cni plugin not
    initialized")."""
    p = kubenode.NodePaths.of(lab, NODE)
    for name in ("bridge", "host-local"):
        if not (p.cni_bin / name).is_symlink():
            (p.cni_bin / name).symlink_to(Path("/usr/lib/cni") / name)
    ref = "/etc/cni/net.d/04-reference.conflist"  # in the node's own /etc (its mount namespace)
    kubenode.node_file(lab, NODE, ref, json.dumps(REFERENCE) if plugin == "reference" else None)
    time.sleep(2.0)  # containerd's CRI picks the change up asynchronously


def round_of(client: Client, n: int, tag: str) -> list[float]:
    """Create ``n`` pods on node1 at once; each one's seconds from its create call to Ready."""
    names = [f"bench-{tag}-{i}" for i in range(n)]
    created: dict[str, float] = {}
    for name in names:
        spec = PodSpec(
            nodeName=NODE, containers=[Container(name="c", image=images.BUSYBOX, command=["sleep", "3600"])],
            automountServiceAccountToken=False, terminationGracePeriodSeconds=0,
        )  # fmt: skip
        created[name] = time.monotonic()
        client.create(
            Pod(metadata=ObjectMeta(name=name, namespace="default", labels={"bench": tag}), spec=spec)
        )
    ready: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(ready) < n:
        if time.monotonic() > deadline:
            late = sorted(set(names) - set(ready))
            events = [
                f"{e.reason}: {e.message}"
                for e in client.list(Event, namespace="default")
                if e.involvedObject.name == late[0]
            ]
            raise SystemExit(f"pods of round {tag} not Ready in 120 s: {late}; {late[0]}'s events: {events}")
        now = time.monotonic()
        for pod in client.list(Pod, namespace="default", labels={"bench": tag}):
            conds = pod.status.conditions or [] if pod.status else []
            name = pod.metadata.name
            if name not in ready and any(c.type == "Ready" and c.status == "True" for c in conds):
                ready[name] = now - created[name]
        time.sleep(0.05)
    for name in names:
        client.delete(Pod, name, namespace="default")
    deadline = time.monotonic() + 120
    while list(client.list(Pod, namespace="default", labels={"bench": tag})):
        if time.monotonic() > deadline:
            raise SystemExit(f"pods of round {tag} not gone in 120 s")
        time.sleep(0.2)
    return [ready[name] for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--pods", type=int, default=8, help="pods per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per plugin")
    parser.add_argument("--json", default="bench/results/pod_start.json")
    args = parser.parse_args()
    topo = load_topology("real-nodes")
    topo = dataclasses.replace(topo, name=f"b{secrets.token_hex(2)}-real")
    results: dict[str, list[float]] = {"podnet": [], "reference": []}
    try:
        print(f"lab {topo.name}: up", file=sys.stderr, flush=True)
        bring_up(topo)
        client = connect(kubeapi.kubeconfig_path(topo.name))
        for r in range(args.rounds):
            order = ("podnet", "reference") if r % 2 == 0 else ("reference", "podnet")
            for plugin in order:
                use_plugin(topo.name, plugin)
                took = round_of(client, args.pods, f"{plugin}-{r}")
                results[plugin] += took
                print(f"round {r} {plugin}: p50 {stats(took)['p50_ms']} ms", file=sys.stderr, flush=True)
        client.close()
    finally:
        bring_down(topo.name)
    out: dict[str, Any] = {
        "what": f"pod create -> Ready on a real kubelet v1.20.2 + containerd 1.6, {args.pods} pods at once "
        f"per round, {args.rounds} rounds per plugin, alternating",
        "podnet": stats(results["podnet"]),
        "reference": stats(results["reference"]),
    }
    out["ratio_p50"] = round(out["podnet"]["p50_ms"] / out["reference"]["p50_ms"], 3)
    out["ratio_p99"] = round(out["podnet"]["p99_ms"] / out["reference"]["p99_ms"], 3)
    out["goal"] = "ratio_p50 <= 1.10"
    out["met"] = out["ratio_p50"] <= 1.10
    print(f"{'plugin':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for plugin in ("podnet", "reference"):
        s = out[plugin]
        print(f"{plugin:<10} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['mean_ms']:>8}")
    print(f"ratio podnet/reference: p50 {out['ratio_p50']}, p99 {out['ratio_p99']} (goal {out['goal']})")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
