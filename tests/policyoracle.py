"""An oracle for NetworkPolicy, written from the API's documentation and independent of
podnet.policy (it reads the raw objects, no shared code): may a new connection from pod ``src``
to pod ``dst`` on (protocol, port) be made? As the upstream e2e suite computes its truth table."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

Obj = Mapping[str, Any]


def _selects(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _types(policy: Obj) -> list[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _peer_ok(peer: Obj, policy_ns: str, other: Obj, ns_labels: Mapping[str, Mapping[str, str]]) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(other["ip"])
        block = peer["ipBlock"]
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if ip.version != net.version or ip not in net:
            return False
        return not any(ip in ipaddress.ip_network(x, strict=False) for x in block.get("except") or [])
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], ns_labels.get(other["namespace"], {})):
            return False
    elif other["namespace"] != policy_ns:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], other["labels"])


def _port_ok(ports: Sequence[Obj], protocol: str, port: int, target: Obj) -> bool:
    if not ports:
        return True
    for p in ports:
        if (p.get("protocol") or "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, int) and want == port:
            return True
        if isinstance(want, str) and target.get("namedPorts", {}).get((want, protocol)) == port:
            return True
    return False


def _side_allows(
    policies: Sequence[Obj], kind: str, me: Obj, other: Obj, protocol: str, port: int, port_owner: Obj,
    ns_labels: Mapping[str, Mapping[str, str]],
) -> bool:  # fmt: skip
    mine = [
        p for p in policies
        if p["metadata"].get("namespace", "default") == me["namespace"]
        and _selects((p.get("spec") or {}).get("podSelector"), me["labels"]) and kind in _types(p)
    ]  # fmt: skip
    if not mine:
        return True  # not isolated
    field, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    for p in mine:
        ns = p["metadata"].get("namespace", "default")
        for rule in (p.get("spec") or {}).get(field) or []:
            peers = rule.get(peers_key) or []
            if peers and not any(_peer_ok(peer, ns, other, ns_labels) for peer in peers):
                continue
            if _port_ok(rule.get("ports") or [], protocol, port, port_owner):
                return True
    return False


def allowed(
    policies: Sequence[Obj], src: Obj, dst: Obj, protocol: str, port: int,
    ns_labels: Mapping[str, Mapping[str, str]],
) -> bool:  # fmt: skip
    """``src``/``dst``: {"namespace", "name", "labels", "ip", "namedPorts": {(name, proto): port}}.
    A pod reaching itself is always allowed (the upstream suite's AllowLoopback: the packet never
    leaves the pod)."""
    if src["namespace"] == dst["namespace"] and src["name"] == dst["name"]:
        return True
    return _side_allows(policies, "Egress", src, dst, protocol, port, dst, ns_labels) and _side_allows(
        policies, "Ingress", dst, src, protocol, port, dst, ns_labels
    )
