"""Routes, both families: dump what podnet owns (proto 201), ensure, replace, delete, ``route get``.

``ensure_route`` is ``ip route replace`` preceded by a comparison, so an unchanged route is not
rewritten; ``replace_route`` skips the comparison (a fresh pod's routes, where there is nothing
to compare). Routes are identified by ``(table, dst)``: one route per prefix and table.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel import af, is_exists, is_gone
from podnet.datapath.objects import PeerPath, Route, default_route
from podnet.model import IPAddress, IPNetwork

MAIN_TABLE = owned.MAIN_TABLE
RTNH_F_ONLINK = 4
FAMILIES = (socket.AF_INET, socket.AF_INET6)
_family = af


def route_from_msg(msg: Any, name_of: Callable[[int], str]) -> Route | None:
    """A kernel route message as a ``Route`` (None for multipath or device-less routes)."""
    oif = msg.get_attr("RTA_OIF")
    if oif is None:
        return None
    family = 4 if msg["family"] == socket.AF_INET else 6
    dst = msg.get_attr("RTA_DST") or default_route(family).network_address
    gateway = msg.get_attr("RTA_GATEWAY")
    src = msg.get_attr("RTA_PREFSRC")
    metrics = msg.get_attr("RTA_METRICS")
    mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
    return Route(
        dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
        dev=name_of(int(oif)),
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        src=ipaddress.ip_address(src) if src else None,
        mtu=int(mtu) if mtu else None,
        protocol=int(msg["proto"]),
        table=int(msg.get_attr("RTA_TABLE") or msg["table"]),
        scope=int(msg["scope"]),
    )


def link_names(ipr: IPRoute) -> dict[int, str]:
    return {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in ipr.link("dump")}


def dump_owned_routes(
    ipr: IPRoute, protocol: int = owned.ROUTE_PROTOCOL, table: int = MAIN_TABLE
) -> list[Route]:
    """Every route of ``table`` with podnet's protocol, both families (``ip route show proto 201``)."""
    names = link_names(ipr)
    found: list[Route] = []
    for family in FAMILIES:
        for msg in ipr.route("dump", family=family, table=table, proto=protocol):
            route = route_from_msg(msg, lambda i: names.get(i, f"if{i}"))
            if route is not None and route.protocol == protocol and route.table == table:
                found.append(route)
    return found


def dump_routes(ipr: IPRoute, family: int, table: int = MAIN_TABLE) -> list[Route]:
    """Every single-path route of ``table`` in one family (4 or 6), any protocol."""
    names = link_names(ipr)
    found = []
    for msg in ipr.route("dump", family=af(family), table=table):
        route = route_from_msg(msg, lambda i: names.get(i, f"if{i}"))
        if route is not None and route.table == table:
            found.append(route)
    return found


def _kwargs(route: Route, index: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dst": str(route.dst),
        "family": _family(route.dst.version),
        "oif": index,
        "table": route.table,
        "proto": route.protocol,
        "scope": route.scope,
    }
    if route.gateway is not None:
        kwargs["gateway"] = str(route.gateway)
    if route.onlink:
        kwargs["flags"] = RTNH_F_ONLINK
    if route.src is not None:
        kwargs["prefsrc"] = str(route.src)
    if route.mtu:
        kwargs["metrics"] = {"mtu": route.mtu}
    return kwargs


def get_route(ipr: IPRoute, dst: IPNetwork, table: int = MAIN_TABLE) -> Route | None:
    """The route of ``table`` for exactly ``dst`` (any protocol), or None."""
    names = link_names(ipr)
    msgs = ipr.route(
        "dump",
        family=_family(dst.version),
        table=table,
        dst=str(dst.network_address),
        dst_len=dst.prefixlen,
    )
    for msg in msgs:
        route = route_from_msg(msg, lambda i: names.get(i, f"if{i}"))
        if route is not None and route.dst == dst and route.table == table:
            return route
    return None


def ensure_route(ipr: IPRoute, route: Route, index_of: Callable[[str], int | None]) -> bool:
    """Make the kernel's route for ``route.dst`` equal ``route``; True when it changed something.
    ``index_of`` turns a device name into its index (a KeyError-free lookup: None if missing)."""
    current = get_route(ipr, route.dst, route.table)
    if current == route:
        return False
    if current is not None and current.protocol != route.protocol:
        raise LookupError(
            f"cannot install route {route.describe()}: {current.describe()} is there and is not podnet's "
            f"(proto {current.protocol}); remove it, or route {route.dst} another way"
        )
    index = index_of(route.dev)
    if index is None:
        raise LookupError(f"cannot install route {route.describe()}: device {route.dev} does not exist")
    ipr.route("replace", **_kwargs(route, index))
    return True


def replace_route(ipr: IPRoute, route: Route, index: int) -> None:
    """``ip route replace`` of ``route`` through link ``index``, without reading first."""
    ipr.route("replace", **_kwargs(route, index))


def add_route(ipr: IPRoute, route: Route, index: int) -> None:
    """``ip route add`` (never replaces): for a destination that has no podnet route, so that a
    route somebody else installed there is refused, not overwritten; one netlink call."""
    try:
        ipr.route("add", **_kwargs(route, index))
    except NetlinkError as exc:
        if not is_exists(exc):
            raise
        current = get_route(ipr, route.dst, route.table)
        if current == route:
            return
        there = current.describe() if current is not None else "another route"
        raise LookupError(
            f"cannot install route {route.describe()}: {there} is there and is not podnet's; remove it, "
            f"or route {route.dst} another way"
        ) from None


def delete_route(ipr: IPRoute, route: Route) -> bool:
    """Delete the route of ``route.table`` for ``route.dst`` with ``route.protocol``; False when gone."""
    try:
        ipr.route(
            "del",
            dst=str(route.dst),
            family=_family(route.dst.version),
            table=route.table,
            proto=route.protocol,
        )
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True


def route_get(ipr: IPRoute, dst: IPAddress) -> PeerPath:
    """``ip route get <dst>``: the device and gateway (if any) the kernel would use."""
    msg = ipr.route("get", dst=str(dst), family=_family(dst.version))[0]
    oif = msg.get_attr("RTA_OIF")
    gateway = msg.get_attr("RTA_GATEWAY")
    src = msg.get_attr("RTA_PREFSRC")
    names = link_names(ipr)
    return PeerPath(
        dst=dst,
        dev=names.get(int(oif)) if oif is not None else None,
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        src=ipaddress.ip_address(src) if src else None,
    )


def cached_path_mtu(ipr: IPRoute, dst: IPAddress) -> int | None:
    """The path MTU the kernel learned for ``dst`` (``ip route get`` shows it as ``cache ... mtu N``)."""
    try:
        msg = ipr.route("get", dst=str(dst), family=_family(dst.version))[0]
    except NetlinkError:
        return None
    metrics = msg.get_attr("RTA_METRICS")
    value = metrics.get_attr("RTAX_MTU") if metrics is not None else None
    return int(value) if value else None


def default_route_dev(ipr: IPRoute, family: int) -> str | None:
    """The device of the main table's default route of one family, if there is one."""
    names = link_names(ipr)
    for msg in ipr.route("dump", family=af(family), table=MAIN_TABLE):
        if msg["dst_len"] == 0 and msg.get_attr("RTA_OIF"):
            return names.get(int(msg.get_attr("RTA_OIF")))
    return None
