"""What the NetworkPolicies allow, as address pairs (pure): for every pod a policy selects, the
sources it may be reached from (ingress) and the destinations it may reach (egress), each with a
protocol and a port range, selectors resolved to pod addresses and named ports to each
destination pod's container port. The kernel side (``podnet.policy.nft``) turns these entries
into set elements, so a packet costs a fixed number of lookups whatever the number of rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from podnet.policy.model import IPBlock, NetworkPolicy, Peer, Port, Rule, Selector

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
EVERYWHERE: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
ALL_PORTS = (0, 65535)


@dataclass(frozen=True, eq=False)  # hashed by identity: its labels are a mapping
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[Address, ...] = ()
    ports: tuple[tuple[str, str, int], ...] = ()  # containers' named ports: (name, protocol, port)
    node: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((p for n, proto, p in self.ports if n == name and proto == protocol), None)


@dataclass(frozen=True)
class Entry:
    """One allowed (source, destination, protocol, ports); protocol None: anything."""

    src: Network
    dst: Network
    protocol: str | None = None
    ports: tuple[int, int] = ALL_PORTS


@dataclass
class Resolved:
    """Per isolated pod address, the policies that isolate it; the allowed entries."""

    ingress_isolated: dict[Address, list[str]] = field(default_factory=dict)
    egress_isolated: dict[Address, list[str]] = field(default_factory=dict)
    ingress: set[Entry] = field(default_factory=set)
    egress: set[Entry] = field(default_factory=set)
    unresolved: list[str] = field(default_factory=list)  # named ports no destination pod has

    def for_node(self, local: set[Address]) -> Resolved:
        """Only what a node enforces: ingress to its pods, egress from its pods."""
        return Resolved(
            {a: p for a, p in self.ingress_isolated.items() if a in local},
            {a: p for a, p in self.egress_isolated.items() if a in local},
            {e for e in self.ingress if e.dst.network_address in local},
            {e for e in self.egress if e.src.network_address in local},
            list(self.unresolved),
        )


def host(ip: Address) -> Network:
    return ipaddress.ip_network(ip)


def block_networks(block: IPBlock) -> list[Network]:
    """The CIDR minus its excepts, as prefixes."""
    left: list[Network] = [block.cidr]
    for ex in block.excepts:
        nxt: list[Network] = []
        for net in left:
            if ex.version == net.version and ex.subnet_of(net):  # type: ignore[arg-type]
                nxt.extend(net.address_exclude(ex))  # type: ignore[arg-type]
            elif ex.version == net.version and net.subnet_of(ex):  # type: ignore[arg-type]
                continue
            else:
                nxt.append(net)
        left = nxt
    return sorted(left, key=lambda n: (n.version, n))


NsLabels = Mapping[str, Mapping[str, str]]


def peer_pods(peer: Peer, policy_ns: str, pods: Sequence[PodInfo], ns_labels: NsLabels) -> list[PodInfo]:
    """The pods a pod/namespace peer names (an ipBlock peer names none)."""
    if peer.ip_block is not None:
        return []
    found = []
    for pod in pods:
        if peer.namespaces is None:
            in_ns = pod.namespace == policy_ns
        else:
            in_ns = peer.namespaces.matches(ns_labels.get(pod.namespace, {}))
        if in_ns and (peer.pods is None or peer.pods.matches(pod.labels)):
            found.append(pod)
    return found


class _Index:
    """The pods by namespace, and each distinct selector's answer computed once per resolve:
    a thousand policies with one podSelector cost one scan, not a thousand."""

    def __init__(self, pods: Sequence[PodInfo], ns_labels: NsLabels) -> None:
        self.pods = pods
        self.ns_labels = ns_labels
        self.by_ns: dict[str, list[PodInfo]] = {}
        for p in pods:
            self.by_ns.setdefault(p.namespace, []).append(p)
        self._selected: dict[tuple[str, Selector], list[PodInfo]] = {}
        self._peers: dict[tuple[Peer, str], list[PodInfo]] = {}

    def selected(self, ns: str, selector: Selector) -> list[PodInfo]:
        key = (ns, selector)
        if key not in self._selected:
            self._selected[key] = [p for p in self.by_ns.get(ns, []) if selector.matches(p.labels)]
        return self._selected[key]

    def peer(self, peer: Peer, ns: str) -> list[PodInfo]:
        key = (peer, ns)
        if key not in self._peers:
            if peer.namespaces is None:  # only the policy's namespace: its pods alone are scanned
                self._peers[key] = peer_pods(peer, ns, self.by_ns.get(ns, []), self.ns_labels)
            else:
                self._peers[key] = peer_pods(peer, ns, self.pods, self.ns_labels)
        return self._peers[key]


def _ports(port: Port, dst: PodInfo | None) -> tuple[str, tuple[int, int]] | None:
    """(protocol, range) of ``port`` toward ``dst``; None: a named port ``dst`` lacks (or no pod)."""
    if port.port is None:
        return port.protocol, ALL_PORTS
    if isinstance(port.port, int):
        return port.protocol, (port.port, port.port)
    number = dst.named_port(port.port, port.protocol) if dst is not None else None
    return (port.protocol, (number, number)) if number is not None else None


def _entries(
    sources: Iterable[Network], dst: Network, dst_pod: PodInfo | None, rule: Rule
) -> Iterable[Entry]:
    for src in sources:
        if src.version != dst.version:
            continue
        if not rule.ports:
            yield Entry(src, dst)
            continue
        for port in rule.ports:
            resolved = _ports(port, dst_pod)
            if resolved is not None:
                yield Entry(src, dst, resolved[0], resolved[1])


def resolve(
    policies: Sequence[NetworkPolicy],
    pods: Sequence[PodInfo],
    ns_labels: Mapping[str, Mapping[str, str]],
    local: set[Address] | None = None,
) -> Resolved:
    """What ``policies`` allow; with ``local`` (a node's pod addresses) only for the pods there,
    as ``Resolved.for_node`` would keep (peers are still every pod of the cluster)."""
    out = Resolved()
    index = _Index(pods, ns_labels)
    for pol in sorted(policies, key=lambda p: p.key):
        selected = index.selected(pol.namespace, pol.pod_selector)
        if local is not None:
            selected = [p for p in selected if any(ip in local for ip in p.ips)]
        if "Ingress" in pol.types:
            for pod in selected:
                for ip in pod.ips:
                    out.ingress_isolated.setdefault(ip, []).append(pol.key)
            for rule in pol.ingress if selected else ():
                sources = _sources(rule, pol.namespace, index)
                for pod in selected:
                    for ip in pod.ips:
                        out.ingress.update(_entries(sources, host(ip), pod, rule))
                    _note_unresolved(out, pol, rule, [pod])
        if "Egress" in pol.types:
            for pod in selected:
                for ip in pod.ips:
                    out.egress_isolated.setdefault(ip, []).append(pol.key)
            for rule in pol.egress if selected or local is None else ():
                targets = _targets(rule, pol.namespace, index)
                for pod in selected:
                    srcs = [host(ip) for ip in pod.ips]
                    for dst, dst_pod in targets:
                        out.egress.update(_entries(srcs, dst, dst_pod, rule))
                _note_unresolved(out, pol, rule, [t for _, t in targets if t is not None])
    return out if local is None else out.for_node(local)


def _sources(rule: Rule, ns: str, index: _Index) -> list[Network]:
    if not rule.peers:
        return list(EVERYWHERE)
    found: list[Network] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            found += block_networks(peer.ip_block)
        else:
            found += [host(ip) for p in index.peer(peer, ns) for ip in p.ips]
    return list(dict.fromkeys(found))


def _targets(rule: Rule, ns: str, index: _Index) -> list[tuple[Network, PodInfo | None]]:
    """Destinations with the pod each is (named ports resolve against it); no peers: every
    address, and every pod for a named port; an ipBlock: its prefixes, and for a named port the
    pods inside it."""
    pods = index.pods
    named = any(isinstance(p.port, str) for p in rule.ports)
    if not rule.peers:
        everywhere: list[tuple[Network, PodInfo | None]] = [(n, None) for n in EVERYWHERE]
        return everywhere + ([(host(ip), p) for p in pods for ip in p.ips] if named else [])
    found: list[tuple[Network, PodInfo | None]] = []
    for peer in rule.peers:
        if peer.ip_block is not None:
            nets = block_networks(peer.ip_block)
            found += [(n, None) for n in nets]
            if named:  # a named port is a pod's: the pods inside the block, each with its own number
                found += [(host(ip), p) for p in pods for ip in p.ips if any(ip in n for n in nets)]
        else:
            found += [(host(ip), p) for p in index.peer(peer, ns) for ip in p.ips]
    return list(dict.fromkeys(found))


def _note_unresolved(out: Resolved, pol: NetworkPolicy, rule: Rule, pods: Sequence[PodInfo]) -> None:
    for port in rule.ports:
        if (
            isinstance(port.port, str)
            and pods
            and not any(p.named_port(port.port, port.protocol) for p in pods)
        ):
            note = f"{pol.key}: no selected pod has a {port.protocol} port named {port.port!r}"
            if note not in out.unresolved:
                out.unresolved.append(note)


def _matches(entries: Iterable[Entry], src: Address, dst: Address, protocol: str, port: int) -> bool:
    for e in entries:
        if src in e.src and dst in e.dst:
            if e.protocol is None:
                return True
            if e.protocol == protocol and e.ports[0] <= port <= e.ports[1]:
                return True
    return False


def allowed(resolved: Resolved, src: Address, dst: Address, protocol: str, port: int) -> tuple[bool, str]:
    """What the node's table decides for a new connection (pure; the table's logic, for
    ``podnet policy show`` and the tests): (allowed, the policies that isolate the end that
    denies it, or ""). A pod's packets to itself never leave it: always allowed."""
    if src == dst:
        return True, ""
    if src in resolved.egress_isolated and not _matches(resolved.egress, src, dst, protocol, port):
        return False, "egress: " + ", ".join(resolved.egress_isolated[src])
    if dst in resolved.ingress_isolated and not _matches(resolved.ingress, src, dst, protocol, port):
        return False, "ingress: " + ", ".join(resolved.ingress_isolated[dst])
    return True, ""
