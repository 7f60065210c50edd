"""The agent's status document: what ``podnet status`` and the lab read over the local API.

Built from public state only: the agent's ``AgentStatus`` (node, devices, last round and its
report), its config, the allocator, the peers it knows and each component's own ``status()``.
The CLI adds what the kernel actually has.
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
from podnet.ipam.base import Allocator
from podnet.model import NodeInfo
from podnet.statusdoc.bgp import BgpStatus
from podnet.statusdoc.datastore import ETCD, StoreHealth
from podnet.statusdoc.policy import PolicyStatus


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
    components: Mapping[str, dict[str, Any]],
    connected: bool,
    config_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The agent's status as JSON: what ``podnet status`` prints (see docs/verify.md)."""
    node = info.node
    mode = mode_for(config)
    tunnel = mode.tunnel(config)
    doc: dict[str, Any] = {
        "ready": info.ready,
        "phase": info.phase,
        "node": node.to_json() if node else None,
        "datastore": config.datastore,
        "kvstore": components.get("kvstore", _store_before_probe(config, connected)),
        "kubernetes": components.get("kubernetes", StoreHealth.disabled().to_json()),
        "routing": {
            "mode": config.routing_mode,
            "modeName": mode.name,
            "tunnelProtocol": tunnel.name if tunnel else None,
            "tunnelPort": config.tunnel_port if tunnel else None,
            "autoDirectNodeRoutes": config.auto_direct_node_routes,
            "tunnelFallback": config.tunnel_fallback,
            "ipv4NativeRoutingCIDR": str(config.ipv4_native_routing_cidr)
            if config.enable_ipv4 and config.ipv4_native_routing_cidr
            else None,
            "ipv6NativeRoutingCIDR": str(config.ipv6_native_routing_cidr)
            if config.enable_ipv6 and config.ipv6_native_routing_cidr
            else None,
            "families": [f for f, on in (("IPv4", config.enable_ipv4), ("IPv6", config.enable_ipv6)) if on],
            "underlayProtocol": config.underlay_protocol,
        },
        "masquerade": components.get("masquerade", {"mode": "disabled"}),
        "guard": components.get("guard", {"enabled": False}),
        "endpoints": components.get("endpoints", {}),
        "errors": [*config_errors, *info.errors],
        "reconciles": info.reconciles,
        "lastReconcile": info.last_reconcile,
        "lastRound": {
            "planSeconds": round(info.round_seconds[0], 6),
            "applySeconds": round(info.round_seconds[1], 6),
            "changes": len(info.last_report.changes) if info.last_report else 0,
            "errors": len(info.last_report.errors) if info.last_report else 0,
        },
    }
    if info.devices is not None:
        doc["mtu"] = {
            "device": info.devices.underlay_mtu,
            "route": info.last_round.route_mtu if info.last_round else None,
            "underlayDevice": info.devices.underlay_dev,
        }
    if allocator is not None:
        doc["ipam"] = _ipam(config, allocator)
    if info.last_round is not None:
        doc["peers"] = _peers(info.last_round, peers)
        doc["routes"] = [_route_json(r) for r in info.last_round.desired.routes]
    doc["pathMTU"] = components.get("pathMTU", {"checked": 0.0, "peers": []})
    doc["bgp"] = components.get("bgp", BgpStatus().to_json())
    doc["hostRouting"] = components.get("hostRouting", {"mode": "Legacy"})
    doc["drops"] = components.get("drops")
    doc["policy"] = components.get("policy", PolicyStatus().to_json())
    if "eni" in components:
        doc["eni"] = components["eni"]
    return doc


def _store_before_probe(config: AgentConfig, connected: bool) -> dict[str, Any]:
    """The KVStore line before the probe's first answer (or with another datastore)."""
    if config.datastore != ETCD:
        return StoreHealth.disabled().to_json()
    state = "ok" if connected else "unknown"
    return StoreHealth(ETCD, state, endpoints=tuple(config.etcd_endpoints)).to_json()


def _ipam(config: AgentConfig, allocator: Allocator) -> dict[str, Any]:
    allocated = allocator.allocated()
    used = sum(1 for ips in allocated.values() for ip in ips if ip.version == 4)
    free = allocator.free(4)
    return {
        "mode": config.ipam_mode,
        "podCIDRs": [str(c) for c in allocator.cidrs],
        "used": used,
        "free": free,
        "total": used + free,
        "allocations": {k: [str(a) for a in v] for k, v in allocated.items()},
        "pools": [use.to_json() for use in allocator.usage()],
        "routerIPs": [str(a) for a in allocator.router_ips()],
    }


def _peers(round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[dict[str, Any]]:
    desired = round_plan.desired
    issues: dict[str, list[str]] = {}
    for issue in desired.issues:
        issues.setdefault(issue.peer, []).append(f"{issue.severity}: {issue.message}")
    known = {p.name: p for p in peers}
    reasons = dict(desired.reasons)
    return [
        {
            "name": name,
            "reach": str(reach),
            "why": reasons.get(name, ""),
            "issues": issues.get(name, []),
            "ipv4": str(known[name].ipv4) if name in known and known[name].ipv4 else None,
            "ipv6": str(known[name].ipv6) if name in known and known[name].ipv6 else None,
            "podCIDRs": [str(c) for c in known[name].pod_cidrs] if name in known else [],
            "routerIPs": [str(a) for a in known[name].router_ips] if name in known else [],
        }
        for name, reach in desired.reach
    ]


def _route_json(route: Route) -> dict[str, Any]:
    return {
        "dst": str(route.dst),
        "dev": route.dev,
        "gateway": str(route.gateway) if route.gateway else None,
        "mtu": route.mtu,
    }
