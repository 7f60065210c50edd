"""Finding the node's underlay: the device that carries node-to-node traffic, its addresses and MTU.

``devices`` from the config wins (Cilium's name); otherwise the device of the default route
(IPv4's, then IPv6's), otherwise the only device that is up with a global address. Both families
are read through ``podnet.datapath.kernel``; the node needs an address of at least one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute

from podnet import owned
from podnet.config import AgentConfig
from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import route as kroute
from podnet.model import IPAddress, IPNetwork

FAMILIES = (4, 6)


class UnderlayError(RuntimeError):
    """No usable underlay device; the message says how to name one."""


@dataclass(frozen=True)
class Underlay:
    dev: str
    index: int
    mtu: int
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None = None
    networks: tuple[IPNetwork, ...] = ()  # the on-link prefixes of the device's global addresses
    gateways: tuple[IPAddress, ...] = ()  # the default routes' next hops

    def address(self, family: int) -> IPAddress | None:
        return self.ipv4 if family == 4 else self.ipv6


def pool_conflicts(pools: Sequence[IPNetwork], underlay: Underlay) -> list[str]:
    """Pure: how pod pools overlap this node's underlay (its networks, addresses, gateways)."""
    problems = []
    for pool in pools:
        for net in underlay.networks:
            if net.version == pool.version and net.overlaps(pool):  # type: ignore[arg-type]
                problems.append(f"pod CIDR {pool} overlaps the underlay network {net} of {underlay.dev}")
        for gateway in underlay.gateways:
            if gateway.version == pool.version and gateway in pool:
                problems.append(f"pod CIDR {pool} contains the underlay gateway {gateway}")
    return problems


def _global_address(ipr: IPRoute, index: int, family: int) -> IPAddress | None:
    found = sorted(a.ip for a in kaddr.global_addresses(ipr, index, family))
    return found[0] if found else None


def _candidates(ipr: IPRoute) -> list[str]:
    names = []
    for index, name in sorted(kroute.link_names(ipr).items()):
        if name == "lo" or name.startswith((owned.DEVICE_PREFIX, owned.ENDPOINT_PREFIX)):
            continue
        if any(_global_address(ipr, index, f) is not None for f in FAMILIES):
            names.append(name)
    return names


def detect_underlay(ipr: IPRoute, config: AgentConfig) -> Underlay:
    dev = config.underlay_device or next(
        (d for d in (kroute.default_route_dev(ipr, f) for f in FAMILIES) if d is not None), None
    )
    if dev is None:
        found = _candidates(ipr)
        if len(found) != 1:
            raise UnderlayError(
                f"cannot tell the underlay device (candidates: {', '.join(found) or 'none'}); "
                "set devices: [eth0] in the agent config"
            )
        dev = found[0]
    index = klink.link_index(ipr, dev)
    if index is None:
        raise UnderlayError(f"underlay device {dev} does not exist; set devices: to the node's uplink")
    ipv4, ipv6 = (_global_address(ipr, index, f) for f in FAMILIES)
    networks = tuple(
        sorted({a.network for f in FAMILIES for a in kaddr.global_addresses(ipr, index, f)}, key=str)
    )
    gateways = tuple(
        r.gateway
        for f in FAMILIES
        for r in kroute.dump_routes(ipr, f)
        if r.dst.prefixlen == 0 and r.gateway is not None
    )
    if ipv4 is None and ipv6 is None:
        raise UnderlayError(
            f"underlay device {dev} has no global IPv4 or IPv6 address; give it one or name another device"
        )
    return Underlay(
        dev,
        index,
        klink.link_mtu(ipr, index),
        ipv4 if isinstance(ipv4, ipaddress.IPv4Address) else None,
        ipv6 if isinstance(ipv6, ipaddress.IPv6Address) else None,
        networks,
        gateways,
    )
