"""Finding the node's underlay: the device that carries node-to-node traffic, its IPv4 and MTU.

``devices`` from the config wins (Cilium's name); otherwise the device of the default route,
otherwise the only device that is up with a global IPv4 address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyroute2 import IPRoute

from podnet import owned
from podnet.config import AgentConfig


class UnderlayError(RuntimeError):
    """No usable underlay device; the message says how to name one."""


@dataclass(frozen=True)
class Underlay:
    dev: str
    index: int
    mtu: int
    ipv4: ipaddress.IPv4Address


def _ipv4_of(ipr: IPRoute, index: int) -> ipaddress.IPv4Address | None:
    for msg in ipr.get_addr(index=index, family=2):
        if msg["scope"] == 0:
            return ipaddress.IPv4Address(msg.get_attr("IFA_ADDRESS"))
    return None


def _candidates(ipr: IPRoute) -> list[str]:
    names = []
    for msg in ipr.get_links():
        name = msg.get_attr("IFLA_IFNAME")
        if name == "lo" or name.startswith(("podnet_", owned.ENDPOINT_PREFIX)):
            continue
        if _ipv4_of(ipr, msg["index"]) is not None:
            names.append(name)
    return names


def _default_route_dev(ipr: IPRoute) -> str | None:
    for r in ipr.get_routes(family=2, table=254):
        if r["dst_len"] == 0 and r.get_attr("RTA_OIF"):
            found = ipr.get_links(r.get_attr("RTA_OIF"))
            return found[0].get_attr("IFLA_IFNAME") if found else None
    return None


def detect_underlay(ipr: IPRoute, config: AgentConfig) -> Underlay:
    dev = config.underlay_device or _default_route_dev(ipr)
    if dev is None:
        found = _candidates(ipr)
        if len(found) != 1:
            raise UnderlayError(
                f"cannot tell the underlay device (candidates: {', '.join(found) or 'none'}); "
                "set devices: [eth0] in the agent config"
            )
        dev = found[0]
    idx = ipr.link_lookup(ifname=dev)
    if not idx:
        raise UnderlayError(f"underlay device {dev} does not exist; set devices: to the node's uplink")
    ipv4 = _ipv4_of(ipr, idx[0])
    if ipv4 is None:
        raise UnderlayError(f"underlay device {dev} has no IPv4 address; give it one or name another device")
    mtu = int(ipr.get_links(idx[0])[0].get_attr("IFLA_MTU"))
    return Underlay(dev, idx[0], mtu, ipv4)
