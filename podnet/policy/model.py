"""Kubernetes NetworkPolicy (networking.k8s.io/v1, as served by 1.20) as podnet reads it: parsed
from the object's dict into frozen dataclasses, validated the way the API server validates it
(an object it would refuse is refused here with the same reason), and label selectors matched.

Semantics kept from the API: a policy selects pods of its own namespace by ``podSelector`` (empty:
all); ``policyTypes`` defaults to Ingress, plus Egress when ``egress`` is present; a selected pod
is isolated for each type its policies name, and then allowed only what some rule of some policy
allows (policies add up). A rule with no ``from``/``to`` allows every peer, with no ``ports``
every port and protocol; a peer is ``podSelector`` (this namespace), ``namespaceSelector`` (those
namespaces' pods), both (AND), or ``ipBlock`` (a CIDR minus ``except``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("TCP", "UDP", "SCTP")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME, no "--"


class PolicyError(ValueError):
    """A NetworkPolicy the API server would refuse; the message names the field (as it does)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selector:
    """A label selector; the empty one matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for r in self.expressions:
            present = r.key in labels
            if r.operator == "In" and not (present and labels[r.key] in r.values):
                return False
            if r.operator == "NotIn" and present and labels[r.key] in r.values:
                return False
            if r.operator == "Exists" and not present:
                return False
            if r.operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class Peer:
    pods: Selector | None = None  # podSelector
    namespaces: Selector | None = None  # namespaceSelector
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class Port:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol; str: a named container port


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer
    ports: tuple[Port, ...] = ()  # empty: every port and protocol


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: Selector = field(default_factory=Selector)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    types: tuple[str, ...] = ("Ingress",)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_selector(raw: Any, where: str) -> Selector:
    if raw is None:
        return Selector()
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a label selector")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise PolicyError(f"{where}.matchLabels: must be a map of strings")
    exprs = []
    for i, e in enumerate(raw.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        op = e.get("operator") if isinstance(e, Mapping) else None
        if op not in OPERATORS:
            raise PolicyError(
                f"{at}.operator: Unsupported value: {op!r}: supported values: {', '.join(OPERATORS)}"
            )
        values = tuple(str(v) for v in e.get("values") or [])
        if op in ("In", "NotIn") and not values:
            raise PolicyError(
                f"{at}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )
        if op in ("Exists", "DoesNotExist") and values:
            raise PolicyError(f"{at}.values: Forbidden: may not be specified when `operator` is 'Exists' or "
                              "'DoesNotExist'")  # fmt: skip
        exprs.append(Requirement(str(e.get("key", "")), op, values))
    return Selector(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(exprs))


def _network(raw: Any, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(raw), strict=False)
    except ValueError as exc:
        raise PolicyError(f"{where}: Invalid value: {raw!r}: must be a valid CIDR ({exc})") from None


def parse_ip_block(raw: Mapping[str, Any], where: str) -> IPBlock:
    cidr = _network(raw.get("cidr"), f"{where}.cidr")
    excepts = []
    for i, e in enumerate(raw.get("except") or []):
        net = _network(e, f"{where}.except[{i}]")
        if net.version != cidr.version or not net.subnet_of(cidr) or net == cidr:  # type: ignore[arg-type]
            raise PolicyError(f"{where}.except[{i}]: Invalid value: {e!r}: must be a strict subset of `cidr`")
        excepts.append(net)
    return IPBlock(cidr, tuple(excepts))


def parse_port(raw: Mapping[str, Any], where: str) -> Port:
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{where}.protocol: Unsupported value: {protocol!r}: supported values: "
                          f"{', '.join(repr(p) for p in PROTOCOLS)}")  # fmt: skip
    port = raw.get("port")
    if port is None:
        return Port(protocol)
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise PolicyError(f"{where}.port: Invalid value: {port!r}")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise PolicyError(f"{where}.port: Invalid value: {port}: must be between 1 and 65535, inclusive")
    if isinstance(port, str) and not PORT_NAME.match(port):
        raise PolicyError(f"{where}.port: Invalid value: {port!r}: must be a port name (IANA_SVC_NAME)")
    return Port(protocol, port)


def parse_peer(raw: Mapping[str, Any], where: str) -> Peer:
    block = raw.get("ipBlock")
    pods, namespaces = raw.get("podSelector"), raw.get("namespaceSelector")
    if block is not None and (pods is not None or namespaces is not None):
        raise PolicyError(f"{where}: Forbidden: may not specify more than 1 peer type")
    if block is None and pods is None and namespaces is None:
        raise PolicyError(f"{where}: Required value: must specify a peer")
    return Peer(
        pods=parse_selector(pods, f"{where}.podSelector") if pods is not None else None,
        namespaces=parse_selector(namespaces, f"{where}.namespaceSelector")
        if namespaces is not None
        else None,
        ip_block=parse_ip_block(block, f"{where}.ipBlock") if block is not None else None,
    )


def _rules(raw: Any, where: str, peers_key: str) -> tuple[Rule, ...]:
    rules = []
    for i, r in enumerate(raw or []):
        at = f"{where}[{i}]"
        r = r or {}
        peers = tuple(parse_peer(p, f"{at}.{peers_key}[{j}]") for j, p in enumerate(r.get(peers_key) or []))
        ports = tuple(parse_port(p, f"{at}.ports[{j}]") for j, p in enumerate(r.get("ports") or []))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse_policy(obj: Mapping[str, Any]) -> NetworkPolicy:
    """A NetworkPolicy object (its dict, as the API server or a YAML file has it)."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name") or "")
    if not name:
        raise PolicyError("metadata.name: Required value")
    spec = obj.get("spec") or {}
    types = spec.get("policyTypes")
    if types is None:
        types = ["Ingress", *(["Egress"] if spec.get("egress") is not None else [])]
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            raise PolicyError(f"spec.policyTypes[{i}]: Unsupported value: {t!r}: supported values: "
                              "'Ingress', 'Egress'")  # fmt: skip
    return NetworkPolicy(
        namespace=namespace,
        name=name,
        pod_selector=parse_selector(spec.get("podSelector") or {}, "spec.podSelector"),
        ingress=_rules(spec.get("ingress"), "spec.ingress", "from"),
        egress=_rules(spec.get("egress"), "spec.egress", "to"),
        types=tuple(dict.fromkeys(types)),
    )


def parse_policies(objs: Sequence[Mapping[str, Any]]) -> tuple[list[NetworkPolicy], list[str]]:
    """Every policy that parses, and ``namespace/name: why`` for each that does not."""
    good, bad = [], []
    for obj in objs:
        try:
            good.append(parse_policy(obj))
        except PolicyError as exc:
            meta = obj.get("metadata") or {}
            bad.append(f"{meta.get('namespace') or 'default'}/{meta.get('name')}: {exc}")
    return good, bad
