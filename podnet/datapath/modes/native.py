"""Native routing mode: pod CIDRs are routed by the underlay, never encapsulated.

With ``autoDirectNodeRoutes`` each peer's pod CIDR gets ``<pod cidr> via <peer node ip> dev
<underlay dev> proto 201``, but only when ``ip route get <peer node ip>`` has no gateway (the
peer shares an L2 segment). A peer behind a gateway is skipped with a warning when
``directRoutingSkipUnreachable`` is set, and is an error otherwise (Cilium's wording). Without
``autoDirectNodeRoutes`` nothing is installed per peer: routers (BGP, static routes) carry the
pod CIDRs.
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
from podnet.model import IPNetwork, NodeInfo
from podnet.registry import ROUTING_MODES


class NativeMode:
    name = "native"
    routing_mode = "native"

    def applies(self, config: AgentConfig) -> bool:
        return config.routing_mode == self.routing_mode and not config.tunnel_fallback

    def needs_paths(self, config: AgentConfig) -> bool:
        return config.auto_direct_node_routes

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
        if not config.auto_direct_node_routes:
            return PeerPlan(reach=Reach.UNDERLAY)
        routes: list[Route] = []
        issues: list[PeerIssue] = []
        for cidr in peer.pod_cidrs:
            route, issue = _direct_route(local, peer, cidr, paths, config, route_mtu)
            if route is not None:
                routes.append(route)
            if issue is not None:
                issues.append(issue)
        return PeerPlan(
            reach=Reach.DIRECT if routes else Reach.UNREACHABLE, routes=tuple(routes), issues=tuple(issues)
        )


def _direct_route(
    local: LocalNode,
    peer: NodeInfo,
    cidr: IPNetwork,
    paths: Mapping[str, PeerPath],
    config: AgentConfig,
    route_mtu: int,
) -> tuple[Route | None, PeerIssue | None]:
    """The direct route for one pod CIDR, or why there is none."""
    family = family_of(cidr)
    node_ip = node_ip_for(peer, family)
    if node_ip is None:
        return None, PeerIssue(
            peer.name,
            Severity.WARNING,
            f"no direct route for {cidr}: node {peer.name} has no IPv{family} address",
        )
    path = paths.get(str(node_ip))
    if path is None:
        return None, PeerIssue(
            peer.name,
            Severity.ERROR,
            f"no direct route for {cidr}: no kernel path to node {peer.name} ({node_ip}) was looked up",
        )
    if not path.direct:
        text = (
            f"failed to add route {cidr} via {node_ip}: route to destination {node_ip} contains "
            f"gateway {path.gateway}, must be directly reachable"
        )
        if config.direct_routing_skip_unreachable:
            return None, PeerIssue(
                peer.name, Severity.WARNING, f"{text} (skipped: directRoutingSkipUnreachable)"
            )
        return None, PeerIssue(
            peer.name,
            Severity.ERROR,
            f"{text}; set directRoutingSkipUnreachable=true to skip such peers, or route pod CIDRs with BGP",
        )
    route = Route(
        dst=cidr,
        dev=path.dev or local.underlay_dev,
        gateway=node_ip,
        mtu=route_mtu if config.mtu else None,
    )
    return route, None


ROUTING_MODES.register(NativeMode.name, NativeMode())
