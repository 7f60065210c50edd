"""The pure planner: (local node, peers, config, kernel paths) -> the desired per-peer datapath.

No netlink, no I/O: every routing decision is a function of its arguments and is unit-tested
without root. The routing mode (``podnet.datapath.modes``) decides what one peer needs; this
module walks the peers, keeps one bad peer from affecting the others, and sorts the result so
that two equal plans compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from podnet.config import AgentConfig
from podnet.datapath import mtu
from podnet.datapath.modes import mode_for
from podnet.datapath.modes.base import (
    DesiredState,
    FdbEntry,
    LocalNode,
    Neighbour,
    PeerIssue,
    PeerPath,
    PeerPlan,
    Reach,
    Route,
    Severity,
    node_ip_for,
)
from podnet.model import IPAddress, NodeInfo

__all__ = [
    "DesiredState",
    "FdbEntry",
    "LocalNode",
    "Neighbour",
    "PeerIssue",
    "PeerPath",
    "PeerPlan",
    "Reach",
    "Route",
    "Severity",
    "paths_needed",
    "plan",
]


KEPT_PATH = "keeping the previous"  # a peer issue during a live switch (podnet config set waits it out)


def paths_needed(local: LocalNode, peers: Sequence[NodeInfo], config: AgentConfig) -> tuple[IPAddress, ...]:
    """Peer node IPs whose kernel path (``route_get``) the planner needs (the mode says whether it
    looks at paths: native with autoDirectNodeRoutes, and the hybrid). Feed the answers to ``plan``
    keyed by ``str(ip)``."""
    if not mode_for(config).needs_paths(config):
        return ()
    wanted: list[IPAddress] = []
    for peer in _remote(local, peers):
        for family in sorted({c.version for c in peer.pod_cidrs}):
            ip = node_ip_for(peer, family)
            if ip is not None:
                wanted.append(ip)
    return tuple(wanted)


def plan(
    local: LocalNode,
    peers: Sequence[NodeInfo],
    config: AgentConfig,
    paths: Mapping[str, PeerPath],
    previous: DesiredState | None = None,
) -> DesiredState:
    """The desired routes, neighbours and FDB entries towards every remote node's pod CIDRs.

    ``previous`` is the last applied plan: a peer that cannot be planned right now (e.g. during a
    live switch to tunnel mode it has not published its VTEP yet) keeps the routes it had, so its
    pods stay reachable until the new path exists."""
    mode = mode_for(config)
    route_mtu = mtu.route_mtu(config, mode, local.underlay_mtu, local.underlay_family)
    routes: dict[str, Route] = {}
    neighbours: set[Neighbour] = set()
    fdb: set[FdbEntry] = set()
    issues: list[PeerIssue] = []
    reach: dict[str, Reach] = {}
    reasons: dict[str, str] = {}
    for peer in _remote(local, peers):
        if not peer.pod_cidrs:
            reach[peer.name] = Reach.UNREACHABLE
            issues.append(PeerIssue(peer.name, Severity.WARNING, f"node {peer.name} has no pod CIDR yet"))
            continue
        peer_plan = mode.plan_peer(local, peer, paths, config, route_mtu)
        if peer_plan.reach is Reach.UNREACHABLE and previous is not None:
            peer_plan = _keep_previous(peer, peer_plan, previous)
        peer_plan = _drop_conflicts(peer, peer_plan, routes, local)
        reach[peer.name] = peer_plan.reach
        if peer_plan.reason:
            reasons[peer.name] = peer_plan.reason
        issues.extend(peer_plan.issues)
        routes.update({str(r.dst): r for r in peer_plan.routes})
        neighbours.update(peer_plan.neighbours)
        fdb.update(peer_plan.fdb)
    return DesiredState(
        routes=tuple(sorted(routes.values(), key=lambda r: (r.dst.version, r.dst))),
        neighbours=tuple(sorted(neighbours, key=lambda n: (n.dst.version, n.dst, n.dev))),
        fdb=tuple(sorted(fdb, key=lambda f: (f.lladdr, str(f.dst), f.dev))),
        issues=tuple(issues),
        reach=tuple(sorted(reach.items())),
        reasons=tuple(sorted(reasons.items())),
        route_mtu=route_mtu,
        tunnel_device=tunnel.device if (tunnel := mode.tunnel(config)) is not None else None,
    )


def _keep_previous(peer: NodeInfo, peer_plan: PeerPlan, previous: DesiredState) -> PeerPlan:
    """Carry over the previous routes to ``peer``'s pod CIDRs when the new plan has none."""
    kept = tuple(r for r in previous.routes if r.dst in peer.pod_cidrs and r.dev != previous.tunnel_device)
    if not kept or peer_plan.routes:
        return peer_plan
    before = previous.reach_of(peer.name) or Reach.UNREACHABLE
    note = PeerIssue(
        peer.name,
        Severity.WARNING,
        f"{KEPT_PATH} {before} path to {peer.name} until the new one exists",
    )
    return PeerPlan(reach=before, routes=kept, issues=(*peer_plan.issues, note), reason=peer_plan.reason)


def _remote(local: LocalNode, peers: Sequence[NodeInfo]) -> list[NodeInfo]:
    return sorted((p for p in peers if p.name != local.node.name), key=lambda p: p.name)


def _drop_conflicts(
    peer: NodeInfo, peer_plan: PeerPlan, taken: Mapping[str, Route], local: LocalNode
) -> PeerPlan:
    """Refuse a peer's routes that overlap the local pod CIDRs or another peer's route for the
    same CIDR (two nodes claiming one CIDR is a store bug; the first by name keeps it)."""
    kept: list[Route] = []
    issues = list(peer_plan.issues)
    for route in peer_plan.routes:
        clash = next(
            (c for c in local.node.pod_cidrs if c.version == route.dst.version and c.overlaps(route.dst)),
            None,
        )
        if clash is not None:
            issues.append(
                PeerIssue(
                    peer.name,
                    Severity.ERROR,
                    f"ignoring pod CIDR {route.dst} of node {peer.name}: overlaps the local pod CIDR {clash}",
                )
            )
        elif str(route.dst) in taken:
            issues.append(
                PeerIssue(
                    peer.name,
                    Severity.ERROR,
                    f"ignoring pod CIDR {route.dst} of node {peer.name}: another node already claims it",
                )
            )
        else:
            kept.append(route)
    if len(kept) == len(peer_plan.routes):
        return peer_plan
    return PeerPlan(
        reach=peer_plan.reach if kept else Reach.UNREACHABLE,
        routes=tuple(kept),
        neighbours=peer_plan.neighbours,
        fdb=peer_plan.fdb,
        issues=tuple(issues),
    )
