"""Whole-topology checks run after parsing: names, addresses, pools, point-to-point links and
gateways. Each error names the key path and the bad value and says what to do."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from podnet.lab.topomodel import Host, Network, TopologyError
from podnet.registry import IPAM_MODES


def check_names(hosts: Sequence[Host], networks: Sequence[Network]) -> None:
    seen: dict[str, str] = {}
    for h in hosts:
        if h.name.startswith("sw-"):
            raise TopologyError(
                f"{h.role}s: name {h.name!r} starts with 'sw-', which the lab keeps for its segments' "
                "namespaces; rename the host"
            )
        if h.name in seen:
            raise TopologyError(f"{h.role}s: name {h.name!r} is used twice ({seen[h.name]} and {h.role})")
        seen[h.name] = h.role
    names = [n.name for n in networks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TopologyError(f"networks: name {sorted(dup)[0]!r} is used twice")


def check_addresses(hosts: Sequence[Host], netmap: Mapping[str, Network]) -> None:
    owner: dict[ipaddress.IPv4Address, str] = {}
    owner6: dict[ipaddress.IPv6Address, str] = {}
    for h in hosts:
        attached: set[str] = set()
        for i in h.interfaces:
            if i.network and i.network in attached:
                raise TopologyError(f"{h.name}: two interfaces on network {i.network}")
            if i.network:
                attached.add(i.network)
            where = f"{h.name}.{i.name}"
            if i.address is not None and i.address.ip in owner:
                raise TopologyError(
                    f"{where}.address: {i.address.ip} is already used by {owner[i.address.ip]}"
                )
            if i.address is not None:
                owner[i.address.ip] = where
            if i.ipv6 is not None:
                if i.ipv6.ip in owner6:
                    raise TopologyError(f"{where}.ipv6: {i.ipv6.ip} is already used by {owner6[i.ipv6.ip]}")
                owner6[i.ipv6.ip] = where
            if i.peer and i.address is not None:
                for net in netmap.values():
                    if net.cidr is not None and net.cidr.overlaps(i.address.network):
                        raise TopologyError(
                            f"{where}.address: link {i.address.network} overlaps "
                            f"network {net.name} ({net.cidr})"
                        )


def _pools(cluster: Mapping[str, Any]) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """The cluster's pod pools as (setting, CIDR); none when the settings do not parse (``lab up``
    reports those with the agent's own error)."""
    from podnet.config import ConfigError, one_setting

    found: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    try:
        for family, key in ((4, "clusterPoolIPv4PodCIDRList"), (6, "clusterPoolIPv6PodCIDRList")):
            if one_setting(cluster, f"enable_ipv{family}"):
                found += [(key, c) for c in one_setting(cluster, f"cluster_pool_ipv{family}_cidrs")]
    except ConfigError:
        return []
    return found


def _underlay_addresses(cluster: Mapping[str, Any]) -> bool:
    """Whether the cluster's IPAM mode gives pods the underlay's own addresses (``IpamSpec``)."""
    from podnet.config import ConfigError, one_setting

    try:
        return bool(IPAM_MODES.spec(one_setting(cluster, "ipam_mode")).underlay_addresses)
    except (ConfigError, KeyError):
        return False


def check_pools(hosts: Sequence[Host], networks: Sequence[Network], cluster: Mapping[str, Any]) -> None:
    """Pod addresses never overlap the underlay: no pool or node podCIDR may overlap a network, a
    point-to-point link or any host's address (a node would take its router's address as a pod
    gateway, and the underlay would route pod traffic to the wrong place)."""
    pools = [] if _underlay_addresses(cluster) else _pools(cluster)
    pools += [(f"{h.name}.podCIDR", h.pod_cidr) for h in hosts if h.pod_cidr is not None]
    for where, pool in pools:
        for net in networks:
            for segment in (net.cidr, net.ipv6):
                if segment is not None and pool.version == segment.version and pool.overlaps(segment):
                    raise TopologyError(
                        f"{where}: pod CIDR {pool} overlaps network {net.name} ({segment}); pick pod "
                        "addresses outside the underlay"
                    )
        for h in hosts:
            for i in h.interfaces:
                a = i.address_of(pool.version)
                if a is not None and (a.ip in pool or (i.peer and a.network.overlaps(pool))):
                    raise TopologyError(
                        f"{where}: pod CIDR {pool} contains {h.name}.{i.name}'s address {a.ip}; "
                        "pick pod addresses outside the underlay"
                    )


def check_p2p(hosts: Sequence[Host]) -> None:
    routers = {h.name: h for h in hosts if h.role == "router"}
    for h in routers.values():
        for i in h.interfaces:
            if i.peer is None:
                continue
            where = f"routers.{h.name}.interfaces.peer"
            if i.peer not in routers or i.peer == h.name:
                raise TopologyError(
                    f"{where}: {i.peer!r} is not another router (known: {', '.join(routers)})"
                )
            back = [j for j in routers[i.peer].interfaces if j.peer == h.name]
            if not back:
                raise TopologyError(f"{where}: router {i.peer} has no interface with peer: {h.name}")
            for mine, theirs in ((i.address, back[0].address), (i.ipv6, back[0].ipv6)):
                if (mine is None) != (theirs is None):
                    raise TopologyError(
                        f"{where}: only one end of link {h.name}-{i.peer} has an ipv6 address; give both "
                        "ends one (or neither)"
                    )
                if mine is not None and theirs is not None and mine.network != theirs.network:
                    raise TopologyError(
                        f"{where}: the ends of link {h.name}-{i.peer} are in different subnets "
                        f"({mine} and {theirs})"
                    )


def check_gateways(hosts: Sequence[Host], netmap: Mapping[str, Network]) -> None:
    router_addrs = {
        (i.network, ip): h.name
        for h in hosts
        if h.role == "router"
        for i in h.interfaces
        if i.network
        for ip in i.ips
    }
    for h in hosts:
        if h.role == "router":
            continue
        where = f"{h.role}s.{h.name}.gateway" if h.role == "node" else f"{h.role}.gateway"
        net = h.primary.network
        if h.gateway6 is not None and (net, h.gateway6) not in router_addrs:
            raise TopologyError(
                f"{where.removesuffix('.gateway')}.ipv6Gateway: {h.gateway6} is not the IPv6 address of "
                f"a router on network {net}"
            )
        if h.gateway is None and h.gateway6 is not None:
            continue  # an IPv6-only host
        if h.gateway is None:
            if len(netmap) > 1 and h.role != "controlplane":
                raise TopologyError(
                    f"{where}: missing; with {len(netmap)} networks the host needs its router's address "
                    f"on {net} as gateway"
                )
            continue
        if (net, h.gateway) not in router_addrs:
            raise TopologyError(f"{where}: {h.gateway} is not the address of a router on network {net}")
