"""ENI mode's datapath (Cilium's): source-based routing so that a pod's packets leave through
the ENI that owns its address, and the ENIs themselves up at the VPC's MTU.

Per ENI with device index ``i`` (found by MAC), table ``10 + i``:

    <gateway> dev ethN scope link table 1i proto 201
    default via <gateway> dev ethN table 1i proto 201

Per local pod address ``X`` on that ENI:

    ip rule add pref 20 to X lookup main proto 201          (to the pod: its veth route in main)
    ip rule add pref 111 from X lookup 1i proto 201         (from the pod: out of its own ENI)

With masquerading on, the second rule is ``from X to <VPC CIDR>`` for each VPC CIDR: traffic to
the world then follows the main table out of the masquerade interface with the node's address;
without the ``to`` it would leave another ENI with an address that ENI does not own, and the
VPC's source check would drop it (the "wrong ENI" failure users of masquerading report).
Pure planning here; ``apply_eni`` makes the kernel match and removes only podnet's own orphans.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute

from podnet import owned
from podnet.datapath.kernel.link import ensure_mtu, ensure_up
from podnet.datapath.kernel.route import delete_route, ensure_route, route_from_msg
from podnet.datapath.kernel.rule import add_rule, delete_rule, dump_rules
from podnet.datapath.objects import SCOPE_LINK, Route, Rule, default_route, host_prefix
from podnet.model import IPAddress

ENI_MTU = 9001  # the VPC's jumbo frames
MAX_ENIS = 16  # device indexes 0..15: tables 10..25 are ENI mode's
ENI_PRIORITIES = (owned.RULE_PRIORITY_TO_ENDPOINT, owned.RULE_PRIORITY_FROM_ENDPOINT)


@dataclass(frozen=True)
class EniPort:
    """One attached ENI as the datapath needs it."""

    index: int
    mac: str
    gateway: ipaddress.IPv4Address

    @property
    def table(self) -> int:
        return owned.ENI_TABLE_BASE + self.index


@dataclass(frozen=True)
class EniPlan:
    links: tuple[tuple[str, int], ...]  # (ifname, mtu) to bring up
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]
    missing: tuple[str, ...] = ()  # ENIs whose link is not on the node (yet), as "ethN (mac)"
    missing_macs: frozenset[str] = frozenset()


def eni_tables() -> range:
    return range(owned.ENI_TABLE_BASE, owned.ENI_TABLE_BASE + MAX_ENIS)


def port_routes(port: EniPort, ifname: str) -> tuple[Route, Route]:
    gw = host_prefix(port.gateway)
    return (
        Route(dst=gw, dev=ifname, table=port.table, scope=SCOPE_LINK),
        Route(dst=default_route(4), dev=ifname, gateway=port.gateway, table=port.table),
    )


def endpoint_rules(
    address: IPAddress, port: EniPort, egress_cidrs: Sequence[ipaddress.IPv4Network] = ()
) -> tuple[Rule, ...]:
    """The two rules of one pod address (``egress_cidrs``: the VPC's, when masquerading)."""
    pod = host_prefix(address)
    rules = [Rule(owned.RULE_PRIORITY_TO_ENDPOINT, owned.MAIN_TABLE, 4, dst=pod)]
    if egress_cidrs:
        rules += [
            Rule(owned.RULE_PRIORITY_FROM_ENDPOINT, port.table, 4, src=pod, dst=c) for c in egress_cidrs
        ]
    else:
        rules.append(Rule(owned.RULE_PRIORITY_FROM_ENDPOINT, port.table, 4, src=pod))
    return tuple(rules)


def plan_eni(
    ports: Sequence[EniPort],
    ifnames: Mapping[str, str],
    endpoints: Mapping[IPAddress, int],
    egress_cidrs: Sequence[ipaddress.IPv4Network] = (),
    mtu: int = ENI_MTU,
) -> EniPlan:
    """``ifnames``: MAC -> the node's link; ``endpoints``: local pod address -> its ENI's index."""
    links, routes, rules, missing, macs = [], [], [], [], set()
    by_index = {p.index: p for p in ports}
    for port in sorted(ports, key=lambda p: p.index):
        ifname = ifnames.get(port.mac.lower())
        if ifname is None:
            missing.append(f"eth{port.index} ({port.mac})")
            macs.add(port.mac.lower())
            continue
        links.append((ifname, mtu))
        routes += port_routes(port, ifname)
    for address, index in sorted(endpoints.items()):
        port = by_index.get(index)
        if port is not None and address.version == 4:
            rules += endpoint_rules(address, port, egress_cidrs)
    rules = sorted(set(rules), key=lambda r: r.sort_key)
    return EniPlan(tuple(links), tuple(routes), tuple(rules), tuple(missing), frozenset(macs))


# ---- applying (netlink) ------------------------------------------------------------------------


def links_by_mac(ipr: IPRoute) -> dict[str, str]:
    """MAC -> link name of every link in the namespace."""
    found = {}
    for msg in ipr.get_links():
        mac, name = msg.get_attr("IFLA_ADDRESS"), msg.get_attr("IFLA_IFNAME")
        if mac and name:
            found[str(mac).lower()] = str(name)
    return found


def apply_eni(ipr: IPRoute, plan: EniPlan, log: Callable[[str], None]) -> list[str]:
    """Make the kernel match ``plan``; returns errors (the rest is still applied)."""
    errors: list[str] = []
    for ifname, mtu in plan.links:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            continue
        if ensure_mtu(ipr, index[0], mtu):
            log(f"ENI {ifname}: mtu {mtu}")
        if ensure_up(ipr, index[0]):
            log(f"ENI {ifname}: up")

    def index_of(name: str) -> int | None:
        found = ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    wanted = set(plan.routes)
    for route in plan.routes:
        try:
            if ensure_route(ipr, route, index_of):
                log(f"route {route.describe()}")
        except (LookupError, OSError) as exc:
            errors.append(f"ENI route {route.describe()}: {exc}")
    keys = {w.key for w in wanted}
    for route in owned_eni_routes(ipr):
        if route not in wanted and route.key not in keys:
            delete_route(ipr, route)
            log(f"removed route {route.describe()}")
    errors += sync_rules(ipr, plan.rules, log)
    return errors


def owned_eni_routes(ipr: IPRoute) -> list[Route]:
    """podnet's routes in the ENI tables (one dump of every table)."""
    names = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()}
    found = []
    for msg in ipr.route("dump", family=socket.AF_INET, proto=owned.ROUTE_PROTOCOL):
        table = int(msg.get_attr("RTA_TABLE") or msg["table"])
        if table in eni_tables():
            route = route_from_msg(msg, lambda i: names.get(i, f"if{i}"))
            if route is not None and route.protocol == owned.ROUTE_PROTOCOL:
                found.append(route)
    return found


def sync_rules(ipr: IPRoute, rules: Sequence[Rule], log: Callable[[str], None]) -> list[str]:
    """Exactly ``rules`` at ENI mode's priorities (podnet's own rules only)."""
    errors: list[str] = []
    have = [r for r in dump_rules(ipr) if r.priority in ENI_PRIORITIES]
    for rule in rules:
        if rule in have:
            continue
        try:
            add_rule(ipr, rule)
            log(rule.describe())
        except OSError as exc:
            errors.append(f"{rule.describe()}: {exc}")
    for rule in have:
        if rule not in rules:
            delete_rule(ipr, rule)
            log(f"removed {rule.describe()}")
    return errors


def add_rules(ipr: IPRoute, rules: Sequence[Rule]) -> None:
    for rule in rules:
        add_rule(ipr, rule)


def delete_rules(ipr: IPRoute, rules: Sequence[Rule]) -> None:
    for rule in rules:
        delete_rule(ipr, rule)
