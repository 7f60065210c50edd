"""The pod guard, pure: what a pod may send, as one nft table (``table inet podnet_guard``).

A pod is not trusted. In the node's namespace the table enforces:

- **source verification** (Cilium's ``enableSourceIPVerification``): a packet from a pod's veth
  (``lxc*``) must carry one of the addresses that pod was given; anything else is dropped and
  counted per interface (set ``spoofed``, one counter per veth). A veth with no entry yet is
  dropped too (fail closed: the CNI handler adds the entry before the pod is wired);
- **tunnel packets only from nodes**: UDP to the tunnel port is accepted only from the underlay
  addresses of current peers (counter ``tunnel_foreign``);
- **pods reach only what they should**: from a pod, nothing to the store's endpoints (their
  client port, and etcd's peer port 2380 on the same address: ``pod_to_control_plane``), to BGP
  (TCP 179, ``pod_to_bgp``) or to any tunnel port (``pod_to_tunnel``); to the node itself only
  ICMP, replies, and the ports a user opens (``podGuard.nodePorts``; ``pod_to_node``).

With drop events on (``bpf.events.drop.enabled``, the default) every drop rule is preceded by a
rule with the same match that sends the packet's headers to NFLOG group ``DROP_GROUP`` with the
prefix ``podnet-drop:<reason>``, at most ``DROP_LOG_RATE`` per second per rule (a flooding pod
cannot flood the monitor); the agent's drop monitor reads them (``podnet drops``).

Counters are named objects and the dynamic set survives re-applies: ``apply_script`` never
deletes the table, it flushes and refills chains and sets in one transaction, so counts keep
growing across rounds and agent restarts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podnet import owned
from podnet.model import IPAddress
from podnet.specs import tunnel as tunnel_spec

TABLE = f"inet {owned.GUARD_TABLE}"
COUNTERS = ("tunnel_foreign", "pod_to_control_plane", "pod_to_bgp", "pod_to_tunnel", "pod_to_node")
BGP_PORT = 179
ETCD_CLIENT_PORT = 2379  # a store endpoint's port when its URL names none
ETCD_PEER_PORT = 2380  # etcd members replicate here (peer URLs); closed on every endpoint's address
DROP_GROUP = 17  # NFLOG group of the guard's drop events (one per namespace)
DROP_PREFIX = "podnet-drop:"
DROP_LOG_RATE = "limit rate 100/second burst 50 packets"


@dataclass(frozen=True)
class EndpointSource:
    """One pod interface: its host-side veth and the addresses it may send from."""

    host_ifname: str
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class GuardPlan:
    endpoints: tuple[EndpointSource, ...]
    peer_underlay: tuple[IPAddress, ...]  # tunnel packets are accepted only from these
    tunnel_port: int | None  # None: the node does not receive tunnel packets (native mode)
    control_plane: tuple[tuple[IPAddress, int], ...]  # (address, TCP port): control_plane_of()
    node_ports: tuple[tuple[str, int], ...] = ()  # ("tcp"|"udp", port) pods may open on the node
    source_verification: bool = True  # enableSourceIPVerification
    isolation: bool = True  # podGuard.enabled: tunnel sources, and what pods may reach
    drop_events: bool = True  # bpf.events.drop.enabled: each drop logged to NFLOG first


def plan_guard(
    endpoints: Iterable[EndpointSource],
    peer_underlay: Iterable[IPAddress | None],
    tunnel_port: int | None,
    control_plane: Iterable[tuple[IPAddress, int]],
    node_ports: Iterable[tuple[str, int]] = (),
    source_verification: bool = True,
    isolation: bool = True,
    drop_events: bool = True,
) -> GuardPlan:
    return GuardPlan(
        endpoints=tuple(sorted(endpoints, key=lambda e: e.host_ifname)),
        peer_underlay=tuple(
            sorted({a for a in peer_underlay if a is not None}, key=lambda a: (a.version, a))
        ),
        tunnel_port=tunnel_port,
        control_plane=tuple(sorted(set(control_plane), key=lambda c: (c[0].version, c[0], c[1]))),
        node_ports=tuple(sorted(set(node_ports))),
        source_verification=source_verification,
        isolation=isolation,
        drop_events=drop_events,
    )


def _elements(items: Sequence[str]) -> str:
    return f"{{ {', '.join(items)} }}" if items else ""


def _set_elements(name: str, items: Sequence[str]) -> list[str]:
    lines = [f"flush set {TABLE} {name}"]
    if items:
        lines.append(f"add element {TABLE} {name} {_elements(items)}")
    return lines


def endpoint_elements(source: EndpointSource, family: int) -> list[str]:
    return [f'"{source.host_ifname}" . {a}' for a in source.addresses if a.version == family]


def apply_script(plan: GuardPlan) -> str:
    """One ``nft -f`` transaction that brings the table to ``plan`` without losing its counters."""
    lines = [
        f"add table {TABLE}",
        f"add set {TABLE} allowed4 {{ type ifname . ipv4_addr; }}",
        f"add set {TABLE} allowed6 {{ type ifname . ipv6_addr; }}",
        f"add set {TABLE} spoofed {{ type ifname; flags dynamic; counter; size 65535; }}",
        f"add set {TABLE} peers4 {{ type ipv4_addr; }}",
        f"add set {TABLE} peers6 {{ type ipv6_addr; }}",
        f"add set {TABLE} control4 {{ type ipv4_addr . inet_service; }}",
        f"add set {TABLE} control6 {{ type ipv6_addr . inet_service; }}",
        *(f"add counter {TABLE} {name}" for name in COUNTERS),
        f"add chain {TABLE} prerouting {{ type filter hook prerouting priority raw; policy accept; }}",
        f"add chain {TABLE} endpoint_source",
        f"add chain {TABLE} input {{ type filter hook input priority filter; policy accept; }}",
        f"add chain {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}",
        *(f"flush chain {TABLE} {chain}" for chain in ("prerouting", "endpoint_source", "input", "forward")),
    ]
    lines += _set_elements("allowed4", [e for s in plan.endpoints for e in endpoint_elements(s, 4)])
    lines += _set_elements("allowed6", [e for s in plan.endpoints for e in endpoint_elements(s, 6)])
    lines += _set_elements("peers4", [str(a) for a in plan.peer_underlay if a.version == 4])
    lines += _set_elements("peers6", [str(a) for a in plan.peer_underlay if a.version == 6])
    lines += _set_elements("control4", [f"{a} . {p}" for a, p in plan.control_plane if a.version == 4])
    lines += _set_elements("control6", [f"{a} . {p}" for a, p in plan.control_plane if a.version == 6])
    rules = _rules(plan)
    if plan.drop_events:
        rules = [logged for rule in rules for logged in _logged(rule)]
    lines += [f"add rule {TABLE} {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def _rules(plan: GuardPlan) -> list[str]:
    pods = f'iifname "{owned.ENDPOINT_PREFIX}*"'
    tunnel_ports = ", ".join(str(p) for p in tunnel_spec.guard_ports())  # every protocol's, on every wire
    rules = []
    if plan.source_verification:
        rules += [
            f"prerouting {pods} jump endpoint_source",
            "endpoint_source meta nfproto ipv4 iifname . ip saddr @allowed4 return",
            "endpoint_source meta nfproto ipv6 iifname . ip6 saddr @allowed6 return",
            # IPv6 neighbour discovery and multicast listener reports from a link-local or the
            # unspecified address (DAD, MLD before the link-local is ready) spoof no pod address
            "endpoint_source ip6 saddr { ::/128, fe80::/10 } icmpv6 type { nd-router-solicit, "
            "nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } return",
            "endpoint_source update @spoofed { iifname } drop",
        ]
    if not plan.isolation:
        return rules
    if plan.tunnel_port is not None:
        port = f"udp dport {plan.tunnel_port}"
        rules += [
            f"input {port} meta nfproto ipv4 ip saddr != @peers4 counter name tunnel_foreign drop",
            f"input {port} meta nfproto ipv6 ip6 saddr != @peers6 counter name tunnel_foreign drop",
        ]
    # a packet of a flow the guard let in is accepted before any other lookup: the drops below
    # refuse a flow's first packet, so no flow they refuse is ever established, and an established
    # stream then costs one conntrack test per packet in each chain instead of eight rules
    rules += [
        "forward ct state established,related accept",
        f"input {pods} ct state established,related accept",
    ]
    for chain in ("input", "forward"):
        rules += [
            f"{chain} {pods} ip daddr . tcp dport @control4 counter name pod_to_control_plane drop",
            f"{chain} {pods} ip6 daddr . tcp dport @control6 counter name pod_to_control_plane drop",
            f"{chain} {pods} tcp dport {BGP_PORT} counter name pod_to_bgp drop",
            f"{chain} {pods} udp dport {{ {tunnel_ports} }} counter name pod_to_tunnel drop",
        ]
    rules += [
        f"input {pods} meta l4proto {{ icmp, ipv6-icmp }} accept",
        *(f"input {pods} {proto} dport {port} accept" for proto, port in plan.node_ports),
        f"input {pods} counter name pod_to_node drop",
    ]
    return rules


DROP_RULE = re.compile(
    r"^(?P<match>.*?) (?:counter name (?P<name>\w+) |update @(?P<set>\w+) \{ iifname \} )drop$"
)


def _logged(rule: str) -> list[str]:
    """A drop rule, preceded by the same match sending the packet to NFLOG (rate-limited)."""
    m = DROP_RULE.match(rule)
    if m is None:
        return [rule]
    reason = m.group("name") or m.group("set")
    log = f'{m.group("match")} {DROP_LOG_RATE} log group {DROP_GROUP} prefix "{DROP_PREFIX}{reason}"'
    return [log, rule]


def add_endpoint_script(source: EndpointSource) -> str:
    """Allow one new pod interface's addresses at once (the CNI ADD does it before wiring)."""
    lines = [f"add element {TABLE} allowed{f} {{ {', '.join(endpoint_elements(source, f))} }}"
             for f in (4, 6) if endpoint_elements(source, f)]  # fmt: skip
    return "\n".join(lines) + "\n" if lines else ""


def delete_endpoint_script(source: EndpointSource) -> str:
    lines = [f"delete element {TABLE} allowed{f} {{ {', '.join(endpoint_elements(source, f))} }}"
             for f in (4, 6) if endpoint_elements(source, f)]  # fmt: skip
    return "\n".join(lines) + "\n" if lines else ""


def control_plane_of(endpoints: Iterable[str]) -> list[tuple[IPAddress, int]]:
    """The (address, TCP port) pairs pods must not reach, from the store's endpoints given as URLs
    with an IP address (names are skipped): each endpoint's client port, and etcd's peer port on
    the same address (a member there refuses a pod by mutual TLS; the guard keeps it from trying).

    ``https://10.0.0.1:2379`` -> ``(10.0.0.1, 2379), (10.0.0.1, 2380)``"""
    from urllib.parse import urlsplit

    found = []
    for url in endpoints:
        parts = urlsplit(url)
        try:
            address = ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            continue
        found += [(address, parts.port or ETCD_CLIENT_PORT), (address, ETCD_PEER_PORT)]
    return found
