"""The agent's status document: what ``podnet status`` and the lab read over the local API.

Built from what the agent knows (its node, config, last plan and reconcile report, IPAM);
the CLI adds what the kernel actually has.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from podnet.agent.cni_handler import free_ipv4
from podnet.datapath import mtu
from podnet.datapath.modes.base import Reach

if TYPE_CHECKING:
    from podnet.agent.daemon import Agent


def status_document(agent: Agent) -> dict[str, Any]:
    """The agent's status as JSON: what ``podnet status`` prints (see docs/verify.md)."""
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
            "tunnelFallback": cfg.tunnel_fallback,
            "ipv4NativeRoutingCIDR": str(cfg.ipv4_native_routing_cidr)
            if cfg.ipv4_native_routing_cidr
            else None,
        },
        "masquerade": _masquerade(agent),
        "errors": [*agent.config_errors, *s.errors],
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
            "total": used + free_ipv4(agent.allocator),
            "allocations": {k: [str(a) for a in v] for k, v in agent.allocator.allocated().items()},
        }
    if s.last_plan is not None:
        issues: Mapping[str, list[str]] = {}
        for issue in s.last_plan.issues:
            issues.setdefault(issue.peer, []).append(f"{issue.severity}: {issue.message}")  # type: ignore[attr-defined]
        known = {p.name: p for p in agent.peers()}
        reasons = dict(s.last_plan.reasons)
        doc["peers"] = [
            {
                "name": name,
                "reach": str(reach),
                "why": reasons.get(name, ""),
                "issues": issues.get(name, []),
                "ipv4": str(known[name].ipv4) if name in known and known[name].ipv4 else None,
                "podCIDRs": [str(c) for c in known[name].pod_cidrs] if name in known else [],
            }
            for name, reach in s.last_plan.reach
        ]
        doc["routes"] = [_route_json(r) for r in s.last_plan.routes]
    probed = {p.peer: p for p in s.path_mtu}
    doc["pathMTU"] = {
        "checked": s.path_mtu_checked,
        "peers": [
            {
                "peer": r.peer,
                "address": r.address,
                "required": r.required,
                "ok": r.ok,
                "discovered": r.discovered,
                "reachable": r.reachable,
                "message": r.message(_overhead_for(agent, r.peer)),
            }
            for r in probed.values()
        ],
    }
    # --- bgp: sessions of the node's speaker (podnet/bgp/speaker.py) ---
    doc["bgp"] = agent.bgp.status() if agent.bgp is not None else {"enabled": False, "peers": []}
    return doc


def _overhead_for(agent: Agent, peer: str) -> int:
    plan = agent.status_info.last_plan
    tunneled = plan is not None and plan.reach_of(peer) is Reach.TUNNEL
    return mtu.tunnel_overhead(agent.config.tunnel_protocol) if tunneled else 0


def _masquerade(agent: Agent) -> dict[str, Any]:
    """What the agent applied (the nft table it owns in this namespace), not only what is configured."""
    cfg = agent.config
    applied = agent._masquerade_applied
    active = bool(applied and "masquerade" in applied)
    return {
        "enableIPv4Masquerade": cfg.enable_ipv4_masquerade,
        "mode": "nftables" if active else "disabled",
        "table": "ip podnet" if active else None,
        "device": agent.underlay.dev if active and agent.underlay else None,
        "exempt": [
            str(c)
            for c in ipaddress.collapse_addresses(
                [
                    *cfg.cluster_pool_ipv4_cidrs,
                    *([cfg.ipv4_native_routing_cidr] if cfg.ipv4_native_routing_cidr else []),
                ]
            )
        ],
    }


def _route_json(route: Any) -> dict[str, Any]:
    return {
        "dst": str(route.dst),
        "dev": route.dev,
        "gateway": str(route.gateway) if route.gateway else None,
        "mtu": route.mtu,
    }
