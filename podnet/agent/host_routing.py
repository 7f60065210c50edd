"""The agent's BPF host routing component (``bpf.hostLegacyRouting: false``): after
every round it attaches ``podnet.datapath.hostrouting``'s program to every pod's veth and fills its
maps with the pods, the cluster's pod CIDRs and, when the node tunnels over IPv4, the encapsulation
and the peers' VTEPs (from the round's FDB plan); a new pod gets it from its CNI ADD at once. With
``hostLegacyRouting: true`` (the default) it removes every such filter: the kernel routes. Either way packets
the program declines take the kernel's path, so switching keeps connections. Its status is
Cilium's ``Host Routing: BPF`` or ``Legacy``.

Design fact: as Cilium does, a node where the program cannot run (it cannot be built or loaded:
no clang and no prebuilt object, a kernel without the helpers) falls back to Legacy by itself,
removes what it had attached, and status says ``Legacy`` with the reason; a new config (a reload
or ``podnet config set``) tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2 import IPRoute

from podnet import owned
from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath import hostrouting as hr
from podnet.datapath.bpf.build import BpfBuildError
from podnet.datapath.bpf.tc import TcError
from podnet.datapath.guard import EndpointSource
from podnet.datapath.modes import mode_for
from podnet.model import NodeInfo
from podnet.statusdoc.hostrouting import BPF, LEGACY, HostRoutingStats, HostRoutingStatus

log = logging.getLogger("podnet.agent")

WIRE_DELAY = 0.5  # seconds after a CNI ADD's allow before the round that attaches to its veth


class HostRouting:
    name = "hostRouting"

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        sources: Callable[[], Sequence[EndpointSource]],
        wake: Callable[[], None] = lambda: None,
        policed: Callable[[], set[Any]] = set,
    ) -> None:
        """``policed``: the addresses of the node's pods a NetworkPolicy isolates."""
        self._config = config
        self._sources = sources
        self._policed = policed
        self._wake = wake  # asks the agent for a round
        self._lock = threading.Lock()
        self._cidrs: tuple[Any, ...] = ()
        self._tunnel: hr.TunnelEncap | None = None
        self._peer_nodes: tuple[Any, ...] = ()
        self._legacy_clean = False  # Legacy, and no host-routing filter left (checked once)
        self.errors: list[str] = []
        self.fallback = ""  # why BPF was asked for and the kernel routes instead
        self._fallback_config: AgentConfig | None = None

    def _enabled(self) -> bool:
        config = self._config()
        if self.fallback and config is self._fallback_config:
            return False
        self.fallback = ""
        return not config.bpf_host_legacy_routing

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        config = self._config()
        self._cidrs = (
            *node.pod_cidrs,
            *(c for p in peers for c in p.pod_cidrs),
            *(config.cluster_pool_ipv4_cidrs if config.enable_ipv4 else ()),
            *(config.cluster_pool_ipv6_cidrs if config.enable_ipv6 else ()),
        )
        self._peer_nodes = tuple(a for p in peers for a in (p.ipv4, p.ipv6) if a is not None)
        protocol = mode_for(config).tunnel(config)
        device = round_plan.desired.tunnel_device
        self._tunnel = hr.plan_tunnel(
            device,
            protocol.name if protocol is not None and protocol.device == device else None,
            None if config.underlay_protocol == "ipv6" else node.ipv4,
            config.tunnel_port,
            owned.VXLAN_VNI,
            round_plan.desired.fdb,
        )
        return self._sync(list(self._sources()))

    def _sync(self, sources: list[EndpointSource]) -> list[str]:
        with self._lock, IPRoute() as ipr:
            try:
                if self._enabled():
                    self._legacy_clean = False
                    plan = hr.plan_host_routing(
                        sources, self._cidrs, self._tunnel, self._policed(), self._peer_nodes
                    )
                    try:
                        changes = hr.apply(ipr, plan)
                    except BpfBuildError as exc:
                        return self._fall_back(ipr, str(exc))
                    except TcError as exc:
                        if hr.ANCHOR not in str(exc):  # a pod's veth went away meanwhile: next round
                            raise
                        return self._fall_back(ipr, f"the kernel refused the program: {exc}")
                elif not self._legacy_clean:  # once after start or a switch: a BPF past's filters go
                    changes = hr.remove(ipr)
                    self._legacy_clean = True
                else:
                    changes = []
            except (OSError, BpfBuildError, KeyError) as exc:
                self.errors = [f"host routing: {exc}"]
                return self.errors
        self.errors = []
        for change in changes:
            log.info("host routing: %s", change)
        return []

    def _fall_back(self, ipr: IPRoute, why: str) -> list[str]:
        """The program cannot run here: Legacy until the config changes (status says why)."""
        self.fallback = f"BPF host routing unavailable ({why.splitlines()[0][:300]}); the kernel routes"
        self._fallback_config = self._config()
        log.warning("host routing: %s", self.fallback)
        try:
            hr.remove(ipr)
        except OSError as exc:
            log.warning("host routing: removing what was attached failed: %s", exc)
        self._legacy_clean = True
        self.errors = []
        return []

    def resync(self) -> None:
        """At once, not at the next round: the set of policed pods changed (NetworkPolicy)."""
        if self._enabled():
            for problem in self._sync(list(self._sources())):
                log.warning("%s", problem)

    def allow(self, source: EndpointSource) -> None:
        """A new pod: its veth is made right after this, so a round shortly after puts the program
        on it (until then its packets take the kernel's path, as with Legacy routing)."""
        if self._enabled():
            timer = threading.Timer(WIRE_DELAY, self._wake)
            timer.daemon = True
            timer.start()

    def revoke(self, source: EndpointSource) -> None:
        if self._enabled():
            self._sync([s for s in self._sources() if s.host_ifname != source.host_ifname])

    def status(self) -> dict[str, Any]:
        enabled = self._enabled()
        errors, stats = tuple(self.errors), None
        if enabled:
            with IPRoute() as ipr:
                try:
                    stats = HostRoutingStats.from_json(hr.stats(ipr))
                except (OSError, KeyError) as exc:
                    errors = (*errors, f"reading the program: {exc}")
        return HostRoutingStatus(BPF if enabled else LEGACY, errors, self.fallback, stats).to_json()

    def stop(self) -> None:
        return None  # the program stays: pods keep their path while the agent is down
