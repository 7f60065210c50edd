"""The agent's status document: what ``podnet status`` and the lab read over the local API.

Built as a ``podnet.statusdoc.document.StatusDocument`` (served as its ``to_json``) from public
state only: the agent's ``AgentStatus`` (node, devices, last round and its report), its config,
the allocator, the peers it knows and each component's own ``status()`` (read into its typed
section, so every key keeps its shape). The CLI adds what the kernel actually has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath.modes import mode_for
from podnet.datapath.nodesetup import NodeDevices
from podnet.datapath.objects import Route
from podnet.datapath.reconcile import ReconcileReport
from podnet.ipam.base import Allocator, PoolUsage
from podnet.model import NodeInfo
from podnet.statusdoc.bgp import BgpStatus
from podnet.statusdoc.datastore import ETCD, KUBERNETES, StoreHealth
from podnet.statusdoc.document import StatusDocument, mode_section_key
from podnet.statusdoc.drops import DropCounters
from podnet.statusdoc.endpoints import EndpointsStatus
from podnet.statusdoc.guard import GuardStatus
from podnet.statusdoc.hostrouting import HostRoutingStatus
from podnet.statusdoc.ipam import IpamStatus, PoolUse
from podnet.statusdoc.masquerade import MasqueradeStatus
from podnet.statusdoc.modesection import ModeSection
from podnet.statusdoc.node import NodeIdentity
from podnet.statusdoc.pathmtu import PathMtuStatus
from podnet.statusdoc.peers import PeerPlan, PlannedRoute
from podnet.statusdoc.policy import PolicyStatus
from podnet.statusdoc.routing import BigTcpFamily, LastRound, MtuStatus, RoutingStatus


@dataclasses.dataclass
class AgentStatus:
    """What the agent knows about itself, served to ``podnet status`` and the lab."""

    ready: bool = False
    phase: str = "starting"
    node: NodeInfo | None = None
    devices: NodeDevices | None = None
    last_round: RoundPlan | None = None
    last_report: ReconcileReport | None = None
    last_reconcile: float = 0.0
    reconciles: int = 0
    round_seconds: tuple[float, float] = (0.0, 0.0)  # the last round's (plan, apply) time
    errors: list[str] = dataclasses.field(default_factory=list)
    cidr_problem: str = ""  # the datastore's pod CIDRs for this node differ from the ones in use


def status_document(
    config: AgentConfig,
    info: AgentStatus,
    allocator: Allocator | None,
    peers: Sequence[NodeInfo],
    components: Mapping[str, Mapping[str, Any]],
    connected: bool,
    config_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The agent's status as JSON: what ``podnet status`` prints (see docs/verify.md)."""
    return status_model(config, info, allocator, peers, components, connected, config_errors).to_json()


def status_model(
    config: AgentConfig,
    info: AgentStatus,
    allocator: Allocator | None,
    peers: Sequence[NodeInfo],
    components: Mapping[str, Mapping[str, Any]],
    connected: bool,
    config_errors: Sequence[str] = (),
) -> StatusDocument:
    """The typed document; each component's ``status()`` JSON is read into its section."""
    devices, last_round, report = info.devices, info.last_round, info.last_report
    kvstore = components.get("kvstore")
    mode_key = mode_section_key(config.ipam_mode)
    return StatusDocument(
        ready=info.ready,
        phase=info.phase,
        node=NodeIdentity.from_json(info.node.to_json()) if info.node else None,
        datastore=config.datastore,
        kvstore=StoreHealth.from_json(kvstore, ETCD) if kvstore else _store_before_probe(config, connected),
        kubernetes=StoreHealth.from_json(components.get("kubernetes"), KUBERNETES),
        routing=_routing(config),
        masquerade=MasqueradeStatus.from_json(components.get("masquerade")),
        guard=GuardStatus.from_json(components.get("guard")),
        endpoints=EndpointsStatus.from_json(components.get("endpoints")),
        errors=(*config_errors, *info.errors),
        reconciles=info.reconciles,
        last_reconcile=info.last_reconcile,
        last_round=LastRound(
            plan_seconds=round(info.round_seconds[0], 6),
            apply_seconds=round(info.round_seconds[1], 6),
            changes=len(report.changes) if report else 0,
            errors=len(report.errors) if report else 0,
        ),
        mtu=MtuStatus(
            device=devices.underlay_mtu,
            route=last_round.route_mtu if last_round else None,
            underlay_device=devices.underlay_dev,
            big_tcp_ipv4=BigTcpFamily(devices.big_tcp.ipv4, devices.big_tcp.ipv4_problem),
            big_tcp_ipv6=BigTcpFamily(devices.big_tcp.ipv6, devices.big_tcp.ipv6_problem),
        )
        if devices is not None
        else None,
        ipam=_ipam(config, allocator) if allocator is not None else None,
        peers=_peers(last_round, peers) if last_round is not None else None,
        routes=tuple(_route(r) for r in last_round.desired.routes) if last_round is not None else (),
        path_mtu=PathMtuStatus.from_json(components.get("pathMTU")),
        bgp=BgpStatus.from_json(components.get("bgp")),
        host_routing=HostRoutingStatus.from_json(components.get("hostRouting")),
        drops=DropCounters.from_json(components.get("drops")),
        policy=PolicyStatus.from_json(components.get("policy")),
        mode_section=ModeSection.from_json(mode_key, components.get(mode_key)) if mode_key else None,
    )


def _routing(config: AgentConfig) -> RoutingStatus:
    mode = mode_for(config)
    tunnel = mode.tunnel(config)
    v4, v6 = config.ipv4_native_routing_cidr, config.ipv6_native_routing_cidr
    return RoutingStatus(
        mode=config.routing_mode,
        mode_name=mode.name,
        tunnel_protocol=tunnel.name if tunnel else None,
        tunnel_port=config.tunnel_port if tunnel else None,
        auto_direct_node_routes=config.auto_direct_node_routes,
        tunnel_fallback=config.tunnel_fallback,
        ipv4_native_routing_cidr=str(v4) if config.enable_ipv4 and v4 else None,
        ipv6_native_routing_cidr=str(v6) if config.enable_ipv6 and v6 else None,
        families=tuple(f for f, on in (("IPv4", config.enable_ipv4), ("IPv6", config.enable_ipv6)) if on),
        underlay_protocol=config.underlay_protocol,
    )


def _store_before_probe(config: AgentConfig, connected: bool) -> StoreHealth:
    """The KVStore line before the probe's first answer (or with another datastore)."""
    if config.datastore != ETCD:
        return StoreHealth.disabled()
    state = "ok" if connected else "unknown"
    return StoreHealth(ETCD, state, endpoints=tuple(config.etcd_endpoints))


def _ipam(config: AgentConfig, allocator: Allocator) -> IpamStatus:
    allocated = allocator.allocated()
    used = sum(1 for ips in allocated.values() for ip in ips if ip.version == 4)
    free = allocator.free(4)
    return IpamStatus(
        mode=config.ipam_mode,
        pod_cidrs=tuple(str(c) for c in allocator.cidrs),
        used=used,
        free=free,
        total=used + free,
        allocations={k: tuple(str(a) for a in v) for k, v in allocated.items()},
        pools=tuple(_pool(use) for use in allocator.usage()),
        router_ips=tuple(str(a) for a in allocator.router_ips()),
    )


def _pool(use: PoolUsage) -> PoolUse:
    return PoolUse(
        pool=use.pool,
        family=use.family,
        cidrs=tuple(str(c) for c in use.cidrs),
        used=use.used,
        capacity=use.capacity,
        needed=use.needed,
        error=use.error or None,
        pool_cidrs=tuple(str(c) for c in use.pool_cidrs),
        exhausted=use.exhausted,
    )


def _peers(round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> tuple[PeerPlan, ...]:
    desired = round_plan.desired
    issues: dict[str, list[str]] = {}
    for issue in desired.issues:
        issues.setdefault(issue.peer, []).append(f"{issue.severity}: {issue.message}")
    known = {p.name: p for p in peers}
    reasons = dict(desired.reasons)
    plans = []
    for name, reach in desired.reach:
        node = known.get(name)
        plans.append(
            PeerPlan(
                name=name,
                reach=str(reach),
                why=reasons.get(name, ""),
                issues=tuple(issues.get(name, [])),
                ipv4=str(node.ipv4) if node and node.ipv4 else None,
                ipv6=str(node.ipv6) if node and node.ipv6 else None,
                pod_cidrs=tuple(str(c) for c in node.pod_cidrs) if node else (),
                router_ips=tuple(str(a) for a in node.router_ips) if node else (),
            )
        )
    return tuple(plans)


def _route(route: Route) -> PlannedRoute:
    return PlannedRoute(
        dst=str(route.dst),
        dev=route.dev,
        gateway=str(route.gateway) if route.gateway else None,
        mtu=route.mtu,
    )
