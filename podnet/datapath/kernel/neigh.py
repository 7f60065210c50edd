"""Permanent neighbour entries and tunnel FDB entries on one device (``ip neigh``/``bridge fdb``).

Only permanent entries are read back: the kernel's own dynamic and NOARP (multicast) entries are
never podnet's. FDB entries without a destination (the device's own addresses) are ignored too.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel import af, is_gone
from podnet.datapath.objects import FdbEntry, Neighbour

NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02

_family = af


def dump_neighbours(ipr: IPRoute, index: int, dev: str) -> list[Neighbour]:
    """Permanent IPv4/IPv6 neighbours on link ``index`` (named ``dev``)."""
    found: list[Neighbour] = []
    for msg in ipr.neigh("dump", ifindex=index):
        if msg["family"] not in (socket.AF_INET, socket.AF_INET6) or msg["ifindex"] != index:
            continue
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if msg["state"] & NUD_PERMANENT and dst and lladdr:
            found.append(Neighbour(dst=ipaddress.ip_address(dst), lladdr=str(lladdr).lower(), dev=dev))
    return found


def replace_neighbour(ipr: IPRoute, index: int, neighbour: Neighbour) -> None:
    """``ip neigh replace <dst> lladdr <mac> dev <index> nud permanent``, without reading first."""
    ipr.neigh(
        "replace",
        dst=str(neighbour.dst),
        lladdr=neighbour.lladdr,
        ifindex=index,
        state=NUD_PERMANENT,
        family=_family(neighbour.dst.version),
    )


def delete_neighbour(ipr: IPRoute, index: int, neighbour: Neighbour) -> bool:
    try:
        ipr.neigh("del", dst=str(neighbour.dst), ifindex=index, family=_family(neighbour.dst.version))
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True


def dump_fdb(ipr: IPRoute, index: int, dev: str) -> list[FdbEntry]:
    """Permanent FDB entries with a remote destination on link ``index`` (``bridge fdb show dev``)."""
    found: list[FdbEntry] = []
    for msg in ipr.fdb("dump", ifindex=index):
        if msg["ifindex"] != index:
            continue
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if msg["state"] & NUD_PERMANENT and dst and lladdr:
            found.append(FdbEntry(lladdr=str(lladdr).lower(), dst=ipaddress.ip_address(dst), dev=dev))
    return found


def replace_fdb(ipr: IPRoute, index: int, entry: FdbEntry) -> None:
    """``bridge fdb replace <mac> dst <ip> dev <index> self permanent``, without reading first."""
    ipr.fdb(
        "replace",
        ifindex=index,
        lladdr=entry.lladdr,
        dst=str(entry.dst),
        state=NUD_PERMANENT | NUD_NOARP,
        flags=NTF_SELF,
    )


def delete_fdb(ipr: IPRoute, index: int, entry: FdbEntry) -> bool:
    try:
        ipr.fdb("del", ifindex=index, lladdr=entry.lladdr, dst=str(entry.dst))
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True
