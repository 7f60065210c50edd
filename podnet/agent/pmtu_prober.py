"""The agent's path-MTU prober: DF probes of every peer's underlay path (``podnet.datapath.pmtu``),
rotating in batches, with what they found in status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2 import IPRoute

from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath.kernel.route import cached_path_mtu
from podnet.datapath.modes import mode_for
from podnet.datapath.modes.base import Reach, node_ip_for
from podnet.datapath.pmtu import PathMtu, probe_families, probe_peers, required_size, small_ping
from podnet.model import NodeInfo

log = logging.getLogger("podnet.agent")

PMTU_INTERVAL = 30.0  # seconds between path MTU probes of every peer (SIGHUP probes at once)
PMTU_BATCH = 64  # at most this many DF probes per interval (distinct peer addresses, rotating)


class PathMtuProber:
    """DF-probes every peer at the size the current plan sends it (``podnet.datapath.pmtu``), every
    ``PMTU_INTERVAL`` seconds and at once on ``probe_now`` (SIGHUP): one probe per distinct
    address and size, at most ``PMTU_BATCH`` per interval (a rotating share in large clusters)."""

    name = "pathMTU"

    def __init__(self, config: Callable[[], AgentConfig]) -> None:
        self._config = config
        self._round: RoundPlan | None = None
        self._peers: dict[str, NodeInfo] = {}
        self._now = threading.Event()
        self._cursor = 0
        self.results: list[PathMtu] = []
        self.checked = 0.0
        self.pod_side: dict[str, dict[str, Any]] = {}  # peer -> its pod side answered (health)

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        threading.Thread(target=self._loop, args=(stop,), name="pmtu", daemon=True).start()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        self._round, self._peers = round_plan, {p.name: p for p in peers}
        return []

    def probe_now(self) -> None:
        self._now.set()

    def _underlay_family(self) -> int:
        return 6 if self._config().underlay_protocol == "ipv6" else 4

    def _overhead(self, reach: Reach | None) -> int:
        config = self._config()
        protocol = mode_for(config).tunnel(config)
        tunnelled = protocol is not None and reach is Reach.TUNNEL
        return protocol.overhead(self._underlay_family()) if tunnelled else 0

    def probe(self) -> list[PathMtu]:
        round_plan = self._round
        if round_plan is None:
            return []
        desired, config = round_plan.desired, self._config()
        pod_families = [f for f, on in ((4, config.enable_ipv4), (6, config.enable_ipv6)) if on]
        wanted: dict[tuple[object, int], str] = {}  # one probe per (address, size), named by one peer
        for name, reach in desired.reach:
            size = required_size(reach, desired.route_mtu, self._overhead(Reach.TUNNEL))
            peer = self._peers.get(name)
            if size is None or peer is None:
                continue
            for family in probe_families(reach, pod_families, self._underlay_family()):
                if (address := node_ip_for(peer, family)) is not None:
                    wanted.setdefault((address, size), name)
        targets = sorted(
            ((name, addr, size) for (addr, size), name in wanted.items()), key=lambda t: str(t[1])
        )
        if len(targets) > PMTU_BATCH:  # large clusters: a rotating share of the peers each interval
            start = self._cursor % len(targets)
            targets = (targets[start:] + targets[:start])[:PMTU_BATCH]
            self._cursor += PMTU_BATCH
        with IPRoute() as ipr:
            results = probe_peers(targets, lambda addr: cached_path_mtu(ipr, addr))
        self._probe_pod_sides({name for name, _, _ in targets})
        for res in results:
            if not res.ok:
                log.warning("%s", res.message(self._overhead(desired.reach_of(res.peer))))
        merged = {r.address: r for r in self.results if r.peer in self._peers}
        merged.update({r.address: r for r in results})
        self.results, self.checked = list(merged.values()), time.time()
        return results

    def _probe_pod_sides(self, names: set[str]) -> None:
        """The peers' health over the pod path (their first router IP: through the tunnel in
        tunnel mode, natively otherwise), beside the underlay and full-size probes above."""
        now = time.time()
        for name in sorted(names):
            peer = self._peers.get(name)
            if peer is None or not peer.router_ips:
                continue
            address = str(peer.router_ips[0])
            ok, detail = small_ping(address)
            self.pod_side[name] = {"address": address, "ok": ok, "detail": detail, "checked": now}
        for gone in set(self.pod_side) - set(self._peers):
            del self.pod_side[gone]

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.probe()
            except Exception as exc:  # probing is advice; it never stops the agent
                log.warning("path MTU probe failed: %s", exc)
            self._now.wait(PMTU_INTERVAL)
            self._now.clear()

    def status(self) -> dict[str, Any]:
        desired = self._round.desired if self._round is not None else None
        return {
            "checked": self.checked,
            "peers": [
                {
                    "peer": r.peer,
                    "address": r.address,
                    "required": r.required,
                    "ok": r.ok,
                    "discovered": r.discovered,
                    "reachable": r.reachable,
                    "message": r.message(self._overhead(desired.reach_of(r.peer) if desired else None)),
                }
                for r in {(p.peer, ":" in p.address): p for p in self.results}.values()
            ],
            "podSide": self.pod_side,
        }

    def stop(self) -> None:
        self._now.set()
