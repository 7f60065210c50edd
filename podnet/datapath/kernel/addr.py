"""Addresses: ``ensure_addr`` / ``delete_addr`` for one address on one link (v4 and v6 alike)."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel import af, is_exists, is_gone

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def addresses(ipr: IPRoute, index: int) -> set[Interface]:
    """The addresses on link ``index`` (``ip addr show dev``)."""
    found: set[Interface] = set()
    for msg in ipr.addr("dump", index=index):
        addr = msg.get_attr("IFA_ADDRESS") if msg["family"] == socket.AF_INET6 else msg.get_attr("IFA_LOCAL")
        if addr is None:
            addr = msg.get_attr("IFA_ADDRESS")
        found.add(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return found


def global_addresses(ipr: IPRoute, index: int, family: int) -> set[Interface]:
    """The global-scope addresses of one family (4 or 6) on link ``index``."""
    found: set[Interface] = set()
    for msg in ipr.addr("dump", index=index, family=af(family)):
        if msg["scope"] != 0:
            continue
        addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        found.add(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}"))
    return found


def ensure_addr(ipr: IPRoute, index: int, address: Interface) -> bool:
    """Add ``address`` (e.g. 10.244.1.1/32) to link ``index``; True when added now."""
    if address in addresses(ipr, index):
        return False
    return add_addr(ipr, index, address)


def add_addr(ipr: IPRoute, index: int, address: Interface) -> bool:
    """Add ``address`` without reading the link's addresses first (one call); False if there."""
    extra = {"nodad": True} if address.version == 6 else {}
    try:
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, **extra)
    except NetlinkError as exc:
        if is_exists(exc):
            return False
        raise
    return True


def delete_addr(ipr: IPRoute, index: int, address: Interface) -> bool:
    """Remove ``address`` from link ``index``; False when it was not there."""
    try:
        ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True
