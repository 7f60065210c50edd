"""Tunnel routing mode: per peer, 1 route and 1 neighbour per pod CIDR plus the protocol's own
entries (a device's FDB entry for the peer's VTEP MAC, or a BPF map's).

For a peer with pod CIDR 10.244.2.0/24, router IP 10.244.2.1, VTEP MAC M and node IP 172.16.2.3:

    ip neigh replace 10.244.2.1 lladdr M dev podnet_vxlan nud permanent
    bridge fdb replace M dst 172.16.2.3 dev podnet_vxlan self permanent
    ip route replace 10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink src <local router ip> \
        mtu <route mtu> proto 201

(flannel's backends, with the peer's router IP as its VTEP address.) An IPv6 CIDR also gets
``<peer router ip>/128 dev podnet_vxlan scope link``: IPv6 refuses an onlink gateway that another
route covers through another device (a native route during a live switch: "Nexthop has invalid
gateway or device mismatch"), and the host route, added first, is the one it then finds.
"""

from __future__ import annotations

from collections.abc import Mapping

from podnet.config import AgentConfig
from podnet.datapath.modes.base import (
    LocalNode,
    Neighbour,
    PeerIssue,
    PeerPath,
    PeerPlan,
    Reach,
    Route,
    Severity,
    family_of,
    node_ip_for,
)
from podnet.datapath.objects import SCOPE_LINK, host_prefix
from podnet.datapath.tunnels import TunnelProtocol, tunnel_protocol
from podnet.model import NodeInfo
from podnet.registry import ROUTING_MODES


class TunnelMode:
    name = "tunnel"
    routing_mode = "tunnel"

    def applies(self, config: AgentConfig) -> bool:
        return config.routing_mode == self.routing_mode

    def needs_paths(self, config: AgentConfig) -> bool:
        return False

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
        protocol = tunnel_protocol(config.tunnel_protocol)
        dev = protocol.device
        underlay_ip = node_ip_for(peer, local.underlay_family)
        missing = [
            what
            for what, value in (
                (f"IPv{local.underlay_family} node address", underlay_ip),
                ("VTEP MAC", peer.vtep_mac),
            )
            if value is None
        ]
        if missing:
            return _unreachable(
                peer, f"cannot tunnel to node {peer.name}: it publishes no {' or '.join(missing)}"
            )
        assert underlay_ip is not None and peer.vtep_mac is not None
        mac = peer.vtep_mac.lower()
        routes: list[Route] = []
        neighbours: list[Neighbour] = []
        issues: list[PeerIssue] = []
        for cidr in peer.pod_cidrs:
            family = family_of(cidr)
            vtep_ip = peer.router_ip_for(family)
            if vtep_ip is None:
                issues.append(
                    PeerIssue(
                        peer.name,
                        Severity.WARNING,
                        f"skipping pod CIDR {cidr} of node {peer.name}: "
                        f"it publishes no IPv{family} router IP",
                    )
                )
                continue
            neighbours.append(Neighbour(dst=vtep_ip, lladdr=mac, dev=dev))
            if family == 6:  # IPv6 checks an onlink gateway against the table: give it a route
                routes.append(Route(dst=host_prefix(vtep_ip), dev=dev, scope=SCOPE_LINK, mtu=route_mtu))
            routes.append(
                Route(
                    dst=cidr,
                    dev=dev,
                    gateway=vtep_ip,
                    onlink=True,
                    src=local.node.router_ip_for(family),
                    mtu=route_mtu,
                )
            )
        fdb = protocol.peer_entries(dev, mac, underlay_ip) if routes else ()
        return PeerPlan(
            reach=Reach.TUNNEL if routes else Reach.UNREACHABLE,
            routes=tuple(routes),
            neighbours=tuple(neighbours),
            fdb=fdb,
            issues=tuple(issues),
        )


def _unreachable(peer: NodeInfo, message: str) -> PeerPlan:
    return PeerPlan(reach=Reach.UNREACHABLE, issues=(PeerIssue(peer.name, Severity.WARNING, message),))


ROUTING_MODES.register(TunnelMode.name, TunnelMode())
