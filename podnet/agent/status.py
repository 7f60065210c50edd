"""The agent's status document: what ``podnet status`` and the lab read over the local API.

Built from what the agent knows (its node, config, last plan and reconcile report, IPAM);
the CLI adds what the kernel actually has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from podnet.agent.cni_handler import free_ipv4
from podnet.datapath import mtu

if TYPE_CHECKING:
    from podnet.agent.daemon import Agent


def status_document(agent: Agent) -> dict[str, Any]:
    """The agent's status as JSON: what ``podnet status`` prints (see docs/status.md)."""
    s = agent.status_info
    cfg = agent.config
    node = s.node
    doc: dict[str, Any] = {
        "ready": s.ready,
        "phase": s.phase,
        "node": node.to_json() if node else None,
        "kvstore": {"endpoints": list(cfg.etcd_endpoints), "connected": agent.store is not None},
        "routing": {
            "mode": cfg.routing_mode,
            "tunnelProtocol": cfg.tunnel_protocol if cfg.tunnel_enabled else None,
            "tunnelPort": cfg.tunnel_port if cfg.tunnel_enabled else None,
            "autoDirectNodeRoutes": cfg.auto_direct_node_routes,
            "ipv4NativeRoutingCIDR": str(cfg.ipv4_native_routing_cidr)
            if cfg.ipv4_native_routing_cidr
            else None,
        },
        "errors": s.errors,
        "reconciles": s.reconciles,
        "lastReconcile": s.last_reconcile,
    }
    if s.devices is not None:
        doc["mtu"] = {
            "device": s.devices.underlay_mtu,
            "route": mtu.route_mtu(cfg, s.devices.underlay_mtu),
            "underlayDevice": s.devices.underlay_dev,
        }
    if agent.allocator is not None:
        used = sum(len(v) for v in agent.allocator.allocated().values())
        doc["ipam"] = {
            "mode": cfg.ipam_mode,
            "podCIDRs": [str(c) for c in agent.allocator.cidrs],
            "used": used,
            "free": free_ipv4(agent.allocator),
            "allocations": {k: [str(a) for a in v] for k, v in agent.allocator.allocated().items()},
        }
    if s.last_plan is not None:
        issues: Mapping[str, list[str]] = {}
        for issue in s.last_plan.issues:
            issues.setdefault(issue.peer, []).append(f"{issue.severity}: {issue.message}")  # type: ignore[attr-defined]
        doc["peers"] = [
            {"name": name, "reach": str(reach), "issues": issues.get(name, [])}
            for name, reach in s.last_plan.reach
        ]
        doc["routes"] = [_route_json(r) for r in s.last_plan.routes]
    return doc


def _route_json(route: Any) -> dict[str, Any]:
    return {
        "dst": str(route.dst),
        "dev": route.dev,
        "gateway": str(route.gateway) if route.gateway else None,
        "mtu": route.mtu,
    }
