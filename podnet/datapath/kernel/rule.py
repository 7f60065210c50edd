"""Policy routing rules (``ip rule``), both families: dump podnet's, ensure, delete.

Rules podnet installs carry protocol 201 (``FRA_PROTOCOL``, ``ip rule show proto 201``), so a
restarted agent finds exactly its own. A rule is identified by all of its fields: the kernel
allows several rules at one priority, and ``ensure_rule`` adds only what is missing.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel import af, is_exists, is_gone
from podnet.datapath.objects import Rule

FR_ACT_TO_TBL = 1


def rule_from_msg(msg: Any) -> Rule | None:
    """A kernel rule message as a ``Rule`` (None for rules podnet cannot express: fwmark, iif...)."""
    if msg["action"] != FR_ACT_TO_TBL or any(
        msg.get_attr(a) is not None for a in ("FRA_FWMARK", "FRA_IIFNAME", "FRA_OIFNAME", "FRA_GOTO")
    ):
        return None
    family = 4 if msg["family"] == socket.AF_INET else 6

    def net(attr: str, length: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        value = msg.get_attr(attr)
        return ipaddress.ip_network(f"{value}/{length}") if value is not None else None

    return Rule(
        priority=int(msg.get_attr("FRA_PRIORITY") or 0),
        table=int(msg.get_attr("FRA_TABLE") or msg["table"]),
        family=family,
        src=net("FRA_SRC", msg["src_len"]),
        dst=net("FRA_DST", msg["dst_len"]),
        protocol=int(msg.get_attr("FRA_PROTOCOL") or 0),
    )


def dump_rules(ipr: IPRoute, protocol: int | None = owned.ROUTE_PROTOCOL) -> list[Rule]:
    """The rules of both families with ``protocol`` (None: every rule podnet can express)."""
    found = []
    for family in (4, 6):
        for msg in ipr.get_rules(family=af(family)):
            rule = rule_from_msg(msg)
            if rule is not None and (protocol is None or rule.protocol == protocol):
                found.append(rule)
    return found


def _kwargs(rule: Rule) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "family": af(rule.family),
        "priority": rule.priority,
        "table": rule.table,
        "action": FR_ACT_TO_TBL,
        "protocol": rule.protocol,
    }
    if rule.src is not None:
        kwargs.update(src=str(rule.src.network_address), src_len=rule.src.prefixlen)
    if rule.dst is not None:
        kwargs.update(dst=str(rule.dst.network_address), dst_len=rule.dst.prefixlen)
    return kwargs


def ensure_rule(ipr: IPRoute, rule: Rule) -> bool:
    """Add ``rule`` unless an equal one is there (read first: for callers that cannot rely on
    EEXIST alone); True when added now."""
    return rule not in dump_rules(ipr, rule.protocol) and add_rule(ipr, rule)


def add_rule(ipr: IPRoute, rule: Rule) -> bool:
    """Add ``rule`` without reading first (one netlink call): the kernel refuses an equal rule
    with EEXIST, which is success here. True when added now."""
    try:
        ipr.rule("add", **_kwargs(rule))
    except NetlinkError as exc:
        if is_exists(exc):
            return False
        raise
    return True


def delete_rule(ipr: IPRoute, rule: Rule) -> bool:
    """Delete ``rule``; False when it was already gone."""
    try:
        ipr.rule("del", **_kwargs(rule))
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True
