"""A routing mode from outside podnet's tree, loaded with ``PODNET_PLUGINS=podnet_dummyroute`` (and
this directory on ``PYTHONPATH``): the proof that a routing mode is one spec plus one class, and
nothing else in podnet names it.

``routingMode: onlink``: every peer's pod CIDRs are routed ``via <peer node IP> dev <underlay>
onlink``, whatever ``autoDirectNodeRoutes`` says and without looking up a kernel path to the peer
(a cluster on one segment, where every node is a neighbour). It never encapsulates.
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.config import AgentConfig
from podnet.datapath.modes.base import (
    LocalNode,
    PeerIssue,
    PeerPath,
    PeerPlan,
    Reach,
    Route,
    Severity,
    family_of,
    node_ip_for,
)
from podnet.datapath.tunnels import TunnelProtocol
from podnet.model import NodeInfo
from podnet.registry import ROUTING_MODES
from podnet.specs.routing import RoutingSpec

NAME = "onlink"

ROUTING_MODES.describe(NAME, RoutingSpec(NAME, NAME, "Onlink (plugin)", tunnels=False))


class OnlinkMode:
    name = NAME
    routing_mode = NAME

    def applies(self, config: AgentConfig) -> bool:
        return config.routing_mode == self.routing_mode

    def needs_paths(self, config: AgentConfig) -> bool:
        return False

    def tunnel(self, config: AgentConfig) -> TunnelProtocol | None:
        return None

    def plan_peer(
        self,
        local: LocalNode,
        peer: NodeInfo,
        paths: Mapping[str, PeerPath],
        config: AgentConfig,
        route_mtu: int,
    ) -> PeerPlan:
        routes: list[Route] = []
        issues: list[PeerIssue] = []
        for cidr in peer.pod_cidrs:
            via = node_ip_for(peer, family_of(cidr))
            if via is None:
                issues.append(PeerIssue(peer.name, Severity.WARNING, f"{cidr}: {peer.name} has no address"))
                continue
            routes.append(Route(dst=cidr, dev=local.underlay_dev, gateway=via, onlink=True))
        return PeerPlan(
            reach=Reach.DIRECT if routes else Reach.UNREACHABLE,
            routes=tuple(routes),
            issues=tuple(issues),
            reason="plugin: onlink via the peer's node IP",
        )


ROUTING_MODES.register(NAME, OnlinkMode())
