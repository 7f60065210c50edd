"""Native routing with a tunnel fallback (``routingMode: native`` + ``tunnelFallback: true``).

Per peer, the cheapest path that works (Calico's CrossSubnet, flannel's DirectRouting):

1. on this node's L2 segment (``ip route get <peer ip>`` has no gateway) and
   ``autoDirectNodeRoutes``: ``<pod cidr> via <peer ip> dev <underlay>`` — plain packets;
2. routed by the underlay: this node runs BGP (the fabric learns every node's pod CIDR) and the
   peer's pod CIDRs lie inside ``ipv4NativeRoutingCIDR`` — nothing per peer, plain packets;
3. otherwise tunnel mode's entries (1 route and 1 neighbour per pod CIDR, and the protocol's
   per-peer entries).

Decided per IP family of the peer's pod CIDRs: the routed-by-the-underlay test uses the native
routing CIDR of that family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from podnet.config import AgentConfig
from podnet.datapath.modes.base import LocalNode, PeerPath, PeerPlan, Reach, node_ip_for
from podnet.datapath.modes.native import NativeMode
from podnet.datapath.modes.tunnel import TunnelMode
from podnet.datapath.tunnels import TunnelProtocol, tunnel_protocol
from podnet.model import IPNetwork, NodeInfo
from podnet.registry import ROUTING_MODES


def native_routing_cidr(config: AgentConfig, family: int) -> IPNetwork | None:
    """``ipv4NativeRoutingCIDR`` or ``ipv6NativeRoutingCIDR``."""
    return config.ipv4_native_routing_cidr if family == 4 else config.ipv6_native_routing_cidr


class HybridMode:
    name = "native+tunnelFallback"
    routing_mode = "native"

    def __init__(self) -> None:
        self._native = NativeMode()
        self._tunnel = TunnelMode()

    def applies(self, config: AgentConfig) -> bool:
        return config.routing_mode == self.routing_mode and config.tunnel_fallback

    def needs_paths(self, config: AgentConfig) -> bool:
        return True

    def tunnel(self, config: AgentConfig) -> TunnelProtocol | None:
        return tunnel_protocol(config.tunnel_protocol)

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
                return self._rest_through_tunnel(
                    local,
                    peer,
                    paths,
                    config,
                    route_mtu,
                    direct,
                    f"same L2 segment as {node_ip} (dev {path.dev})",
                )
        if config.bgp_enabled and all(_inside_native(config, c) for c in peer.pod_cidrs):
            inside = ", ".join(
                f"ipv{f}NativeRoutingCIDR {native_routing_cidr(config, f)}"
                for f in sorted({c.version for c in peer.pod_cidrs})
            )
            return PeerPlan(
                reach=Reach.UNDERLAY, reason=f"pod CIDRs inside {inside}, routed by the BGP fabric"
            )
        tunnel = self._tunnel.plan_peer(local, peer, paths, config, route_mtu)
        gateway = path.gateway if path is not None else None
        why = f"behind gateway {gateway}" if gateway else "not directly reachable"
        return replace(tunnel, reason=f"{why}, not routable by the underlay: {config.tunnel_protocol} tunnel")

    def _rest_through_tunnel(
        self, local: LocalNode, peer: NodeInfo, paths: Mapping[str, PeerPath], config: AgentConfig,
        route_mtu: int, direct: PeerPlan, reason: str,
    ) -> PeerPlan:  # fmt: skip
        """Direct routes where the peer has a node address of the CIDR's family; its other pod
        CIDRs (IPv6 ones of a node without an IPv6 address) through the tunnel: decided per family."""
        routed = {r.dst for r in direct.routes}
        rest = tuple(c for c in peer.pod_cidrs if c not in routed)
        if not rest:
            return replace(direct, reason=reason)
        tunnel = self._tunnel.plan_peer(local, replace(peer, pod_cidrs=rest), paths, config, route_mtu)
        families = ", ".join(f"IPv{c.version} {c}" for c in rest)
        return PeerPlan(
            reach=Reach.DIRECT,
            routes=(*direct.routes, *tunnel.routes),
            neighbours=(*direct.neighbours, *tunnel.neighbours),
            fdb=tunnel.fdb,
            issues=tuple(i for i in direct.issues if "no direct route" not in i.message) + tunnel.issues,
            reason=f"{reason}; {families} through the {config.tunnel_protocol} tunnel (no node address "
            "of that family for a direct route)",
        )


def _inside_native(config: AgentConfig, cidr: IPNetwork) -> bool:
    native = native_routing_cidr(config, cidr.version)
    return native is not None and native.version == cidr.version and cidr.subnet_of(native)  # type: ignore[arg-type]


ROUTING_MODES.register(HybridMode.name, HybridMode())
