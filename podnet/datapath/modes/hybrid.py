"""Native routing with a tunnel fallback (``routingMode: native`` + ``tunnelFallback: true``).

Per peer, the cheapest path that works (Calico's CrossSubnet, flannel's DirectRouting):

1. on this node's L2 segment (``ip route get <peer ip>`` has no gateway) and
   ``autoDirectNodeRoutes``: ``<pod cidr> via <peer ip> dev <underlay>`` — plain packets;
2. routed by the underlay: this node runs BGP (the fabric learns every node's pod CIDR) and the
   peer's pod CIDRs lie inside ``ipv4NativeRoutingCIDR`` — nothing per peer, plain packets;
3. otherwise the VXLAN entries of tunnel mode (1 route, 1 neighbour, 1 FDB entry per pod CIDR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from podnet.datapath.modes.base import LocalNode, PeerPath, PeerPlan, Reach, node_ip_for
from podnet.datapath.modes.native import NativeMode
from podnet.datapath.modes.protocols import TUNNEL_PROTOCOLS
from podnet.datapath.modes.tunnel import TunnelMode
from podnet.model import NodeInfo

if TYPE_CHECKING:
    from podnet.config import AgentConfig


class HybridMode:
    name = "native+tunnelFallback"

    def __init__(self) -> None:
        self._native = NativeMode()
        self._tunnel = TunnelMode()

    def needs_paths(self, config: AgentConfig) -> bool:
        return True

    def tunnel_device(self, config: AgentConfig) -> str | None:
        return TUNNEL_PROTOCOLS[config.tunnel_protocol].device

    def plan_peer(
        self,
        local: LocalNode,
        peer: NodeInfo,
        paths: Mapping[str, PeerPath],
        config: AgentConfig,
        route_mtu: int,
    ) -> PeerPlan:
        node_ip = node_ip_for(peer, local.underlay_family)
        path = paths.get(str(node_ip)) if node_ip is not None else None
        if config.auto_direct_node_routes and path is not None and path.direct:
            direct = self._native.plan_peer(local, peer, paths, config, route_mtu)
            if direct.reach is Reach.DIRECT:
                return replace(direct, reason=f"same L2 segment as {node_ip} (dev {path.dev})")
        native_cidr = config.ipv4_native_routing_cidr
        if (
            config.bgp_enabled
            and native_cidr is not None
            and all(c.version == 4 and c.subnet_of(native_cidr) for c in peer.pod_cidrs)  # type: ignore[arg-type]
        ):
            return PeerPlan(
                reach=Reach.UNDERLAY,
                reason=f"pod CIDRs inside ipv4NativeRoutingCIDR {native_cidr}, routed by the BGP fabric",
            )
        tunnel = self._tunnel.plan_peer(local, peer, paths, config, route_mtu)
        gateway = path.gateway if path is not None else None
        why = f"behind gateway {gateway}" if gateway else "not directly reachable"
        return replace(tunnel, reason=f"{why}, not routable by the underlay: {config.tunnel_protocol} tunnel")
