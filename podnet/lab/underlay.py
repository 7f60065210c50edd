"""The lab underlay's own routing (its "IGP"): static routes for every router, computed, pure.

Each router gets, for every segment and router link it is not attached to, a route over the
shortest router path; equal-cost next hops become one multipath route (leaf-spine ECMP).
IPv4 and IPv6 are planned apart (a link without IPv6 carries no IPv6 route).
Pod CIDRs are never put here: the underlay knowing pod CIDRs is what BGP is for.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from podnet.lab.topology import Host, Topology

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
FAMILIES = (4, 6)


@dataclass(frozen=True)
class UnderlayRoute:
    """``ip route replace <dst> nexthop via A [nexthop via B]`` inside one router namespace."""

    router: str
    dst: IPNet
    via: tuple[IPAddr, ...]


def _adjacency(topo: Topology, family: int) -> dict[str, list[tuple[str, IPAddr]]]:
    """router -> [(neighbour router, neighbour's address of ``family`` on the shared segment or
    link)]; a neighbour without an address of that family is no neighbour in that family."""
    routers = topo.routers
    adj: dict[str, list[tuple[str, IPAddr]]] = {r.name: [] for r in routers}
    for a in routers:
        for ia in a.interfaces:
            for b in routers:
                if b.name == a.name:
                    continue
                for ib in b.interfaces:
                    shared_net = ia.network is not None and ia.network == ib.network
                    linked = ia.peer == b.name and ib.peer == a.name
                    theirs, mine = ib.address_of(family), ia.address_of(family)
                    if (shared_net or linked) and theirs is not None and mine is not None:
                        adj[a.name].append((b.name, theirs.ip))
    return adj


def _attached(host: Host, family: int) -> set[IPNet]:
    return {a.network for i in host.interfaces if (a := i.address_of(family)) is not None}


def _distances(adj: dict[str, list[tuple[str, IPAddr]]], start: str) -> dict[str, int]:
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        for nxt, _ in adj[cur]:
            if nxt not in dist:
                dist[nxt] = dist[cur] + 1
                queue.append(nxt)
    return dist


def plan_underlay_routes(topo: Topology) -> list[UnderlayRoute]:
    """Routes every router needs so that all segments and links reach each other, per family."""
    routes: list[UnderlayRoute] = []
    for family in FAMILIES:
        routes += _family_routes(topo, family)
    return routes


def _family_routes(topo: Topology, family: int) -> list[UnderlayRoute]:
    adj = _adjacency(topo, family)
    routers = {r.name: r for r in topo.routers}
    owners: dict[IPNet, set[str]] = {}
    for r in routers.values():
        for net in _attached(r, family):
            owners.setdefault(net, set()).add(r.name)
    dist_from = {name: _distances(adj, name) for name in routers}
    routes: list[UnderlayRoute] = []
    for name, router in routers.items():
        attached = _attached(router, family)
        static = {s.to for s in router.routes}
        for dst, dst_owners in sorted(owners.items(), key=lambda kv: kv[0]):
            if dst in attached or dst in static:
                continue
            # distance from each neighbour to the nearest router attached to dst
            best: dict[IPAddr, int] = {}
            for nbr, via in adj[name]:
                d = min((dist_from[nbr].get(o, 10**6) for o in dst_owners), default=10**6)
                if d < 10**6:
                    best[via] = min(d, best.get(via, 10**6))
            if not best:
                continue
            shortest = min(best.values())
            vias = tuple(sorted(v for v, d in best.items() if d == shortest))
            routes.append(UnderlayRoute(name, dst, vias))
        for s in router.routes:
            if s.to.version == family:
                routes.append(UnderlayRoute(name, s.to, (s.via,)))
    return routes
