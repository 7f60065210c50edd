"""One agent round as a pure function: (config, local node, peers, kernel paths) -> what to apply.

``plan_round`` decides everything the agent applies in a round, without I/O: the per-peer
datapath (``podnet.datapath.plan``), the masquerade table, the pod guard (``datapath.guard``:
source verification and what pods may reach), the pods' route MTU, and whether the
node keeps its tunnel device (yes while its mode tunnels, and while any peer still sends it
encapsulated packets during a live mode switch). The agent feeds it and hands the result to its
appliers and components; tests call it directly, without root.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podnet.config import AgentConfig
from podnet.datapath.guard import EndpointSource, GuardPlan, control_plane_of, plan_guard
from podnet.datapath.masquerade import MasqueradePlan, plan_masquerade
from podnet.datapath.modes import mode_for
from podnet.datapath.modes.base import DesiredState, LocalNode, PeerPath
from podnet.datapath.plan import plan
from podnet.model import IPNetwork, NodeInfo

TUNNEL_LABEL = "podnet.io/tunnel"  # a node publishes it while it sends encapsulated packets


@dataclass(frozen=True)
class RoundPlan:
    """Everything one round applies."""

    desired: DesiredState
    masquerade: MasqueradePlan | None
    route_mtu: int
    keep_tunnel_device: bool
    guard: GuardPlan | None = None  # None: neither source verification nor the pod guard is on
    masquerade6: MasqueradePlan | None = None  # table ip6 podnet (dual stack, enableIPv6Masquerade)


def node_labels(config: AgentConfig) -> tuple[tuple[str, str], ...]:
    """What peers must know about this node's datapath: whether, and with what, it tunnels."""
    protocol = mode_for(config).tunnel(config)
    return ((TUNNEL_LABEL, protocol.name),) if protocol is not None else ()


def keeps_tunnel_device(config: AgentConfig, peers: Sequence[NodeInfo]) -> bool:
    """The tunnel device stays while this node tunnels or any peer still tunnels to it."""
    return mode_for(config).tunnel(config) is not None or any(dict(p.labels).get(TUNNEL_LABEL) for p in peers)


def plan_round(
    config: AgentConfig,
    local: LocalNode,
    peers: Sequence[NodeInfo],
    paths: Mapping[str, PeerPath],
    previous: DesiredState | None = None,
    endpoints: Sequence[EndpointSource] = (),
    pool_cidrs: Sequence[IPNetwork] = (),
) -> RoundPlan:
    """The round for ``local`` given the store's ``peers`` and the kernel's ``paths`` to them.
    ``previous`` (the last applied plan, during a live switch) keeps peers reachable that the
    new mode cannot plan yet. Masquerading spares the cluster pool, ``pool_cidrs`` (every named IP
    pool) and every node's pod CIDRs (whatever IPAM mode gave them)."""
    desired = plan(local, peers, config, paths, previous)
    node = local.node
    cluster = [
        *(config.cluster_pool_ipv4_cidrs if config.enable_ipv4 else ()),
        *(config.cluster_pool_ipv6_cidrs if config.enable_ipv6 else ()),
        *pool_cidrs,
        *(c for p in peers for c in p.pod_cidrs),
    ]
    egress = ",".join(config.egress_masquerade_interfaces) or local.underlay_dev
    node_ips = [a for n in (node, *peers) for a in (n.ipv4, n.ipv6)]
    masquerade, masquerade6 = (
        plan_masquerade(enabled, node.pod_cidrs, cluster, native, node_ips, egress, family)
        for enabled, native, family in (
            (config.enable_ipv4 and config.enable_ipv4_masquerade, config.ipv4_native_routing_cidr, 4),
            (config.enable_ipv6 and config.enable_ipv6_masquerade, config.ipv6_native_routing_cidr, 6),
        )
    )
    keep_tunnel = keeps_tunnel_device(config, peers)
    guard = None
    if config.pod_guard or config.enable_source_ip_verification:
        guard = plan_guard(
            endpoints,
            [a for p in peers if p.name != node.name for a in (p.ipv4, p.ipv6)],
            config.tunnel_port if keep_tunnel else None,
            control_plane_of(config.etcd_endpoints),
            config.pod_guard_node_ports,
            source_verification=config.enable_source_ip_verification,
            isolation=config.pod_guard,
            drop_events=config.drop_events,
        )
    return RoundPlan(
        desired=desired,
        masquerade=masquerade,
        route_mtu=desired.route_mtu,
        keep_tunnel_device=keep_tunnel,
        guard=guard,
        masquerade6=masquerade6,
    )
