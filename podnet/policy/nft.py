"""The node's NetworkPolicy table (``table inet podnet_policy``), rendered from the resolved
entries (pure) and loaded in one ``nft -f`` transaction (the old table goes in the same one, so
there is no moment without policy).

    forward (priority filter + 5):
      ct state established,related accept          replies and allowed flows: no lookup at all
      ip daddr vmap @in_pods4   -> jump in_check4   the destination is an isolated local pod
      ip saddr vmap @out_pods4  -> jump out_check4  the source is an isolated local pod
    in_check4:
      ip saddr . ip daddr @in_any4 return                                   rules without ports
      meta l4proto {tcp,udp,sctp} ip saddr . ip daddr . meta l4proto . th dport @in_ports4 return
      log (NFLOG, "podnet-drop:policy-denied-ingress") drop

A packet costs at most four set lookups whatever the number of policies and rules: the sets are
interval sets of concatenations (source prefix . destination . protocol . port range). The same
for IPv6 (``in_pods6`` ...). Pods no policy isolates are not in ``*_pods*``: nothing is looked
up for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from podnet.policy.resolve import Address, Entry, Network, Resolved

TABLE = "podnet_policy"
DROP_GROUP = 17  # the guard's NFLOG group: one drop monitor reads both (podnet.datapath.guard)
DROP_PREFIX = "podnet-drop:"
INGRESS_REASON, EGRESS_REASON = "policy-denied-ingress", "policy-denied-egress"
LOG_RATE = "limit rate 100/second burst 50 packets"
FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}


def _elements(items: Iterable[str]) -> str:
    found = sorted(set(items))
    return f"elements = {{ {', '.join(found)} }}" if found else ""


def _net(net: Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _entry(e: Entry, ports: bool) -> str:
    if not ports:
        return f"{_net(e.src)} . {_net(e.dst)}"
    lo, hi = e.ports
    span = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{_net(e.src)} . {_net(e.dst)} . {str(e.protocol).lower()} . {span}"


def _sets(direction: str, family: int, isolated: Iterable[Address], entries: Iterable[Entry]) -> list[str]:
    _, addr = FAMILIES[family]
    mine = [e for e in entries if e.src.version == family]
    pods = [f"{ip} : jump {direction}_check{family}" for ip in isolated if ip.version == family]
    any_ = [_entry(e, False) for e in mine if e.protocol is None]
    ports = [_entry(e, True) for e in mine if e.protocol is not None]
    return [
        f"  map {direction}_pods{family} {{ type {addr} : verdict; {_elements(pods)} }}",
        f"  set {direction}_any{family} {{ type {addr} . {addr}; flags interval; {_elements(any_)} }}",
        f"  set {direction}_ports{family} {{ type {addr} . {addr} . inet_proto . inet_service; "
        f"flags interval; {_elements(ports)} }}",
    ]


def _check_chain(direction: str, family: int, drop_events: bool) -> list[str]:
    """Allowed: return to ``forward``; else logged (rate-limited, a rule of its own so that the
    limit never spares a packet) and dropped."""
    proto, _ = FAMILIES[family]
    reason = INGRESS_REASON if direction == "in" else EGRESS_REASON
    log = [f'    {LOG_RATE} log group {DROP_GROUP} prefix "{DROP_PREFIX}{reason}"'] if drop_events else []
    return [
        f"  chain {direction}_check{family} {{",
        f"    {proto} saddr . {proto} daddr @{direction}_any{family} return",
        f"    meta l4proto {{ tcp, udp, sctp }} {proto} saddr . {proto} daddr . meta l4proto . th dport "
        f"@{direction}_ports{family} return",
        *log,
        "    counter drop",
        "  }",
    ]


def render(resolved: Resolved, drop_events: bool = True) -> str:
    """The whole table, replacing the previous one in the same transaction."""
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    for family in (4, 6):
        lines += _sets("in", family, resolved.ingress_isolated, resolved.ingress)
        lines += _sets("out", family, resolved.egress_isolated, resolved.egress)
    for family in (4, 6):
        lines += _check_chain("in", family, drop_events) + _check_chain("out", family, drop_events)
    lines += [
        "  chain forward {",
        "    type filter hook forward priority filter + 5; policy accept;",
        "    ct state established,related accept",
        "    ip daddr vmap @in_pods4",
        "    ip6 daddr vmap @in_pods6",
        "    ip saddr vmap @out_pods4",
        "    ip6 saddr vmap @out_pods6",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def remove() -> str:
    """No policy at all: the table goes (nothing is looked up for any packet)."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"
