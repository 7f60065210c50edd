"""PodnetNode objects <-> podnet's node records (pure; the same record the etcd datastore stores).

Who writes what, as with CiliumNode: the node's agent owns ``spec.addresses``, ``spec.vtepMAC``,
``spec.routerIPs``, ``spec.labels``, ``spec.ipam.requestedPodCIDRs`` and ``status``; the operator
owns ``spec.ipam.podCIDRs``. Each applies only its own fields (server-side apply, one field
manager each), so neither overwrites the other.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from podnet.model import NodeInfo
from podnet.registry import IPAM_MODES
from podnet.store.nodes import NodeRecord

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Kubernetes' date-time (RFC 3339, UTC, seconds)
AGENT_MANAGER = "podnet-agent"
OPERATOR_MANAGER = "podnet-operator"


def to_time(seconds: float) -> str:
    """Unix seconds as a Kubernetes date-time (``status.lastSeen``)."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(TIME_FORMAT)


def from_time(stamp: str) -> float:
    """A Kubernetes date-time as unix seconds."""
    return datetime.datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=datetime.UTC).timestamp()


def agent_spec(record: NodeRecord) -> dict[str, Any]:
    """The part of a PodnetNode's spec the node's agent owns."""
    node = record.node
    addresses = [{"type": "InternalIP", "ip": str(ip)} for ip in (node.ipv4, node.ipv6) if ip is not None]
    spec: dict[str, Any] = {
        "addresses": addresses,
        "routerIPs": [str(ip) for ip in node.router_ips],
        "labels": dict(node.labels),
        "ipam": {"requestedPodCIDRs": [str(c) for c in record.requested_pod_cidrs]},
    }
    if node.vtep_mac:
        spec["vtepMAC"] = node.vtep_mac
    return spec


def record_of(name: str, spec: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> NodeRecord:
    """A PodnetNode as a node record; ``ValueError`` for one that cannot be read."""
    spec, status = spec or {}, status or {}
    ipv4 = ipv6 = None
    for entry in spec.get("addresses") or []:
        if entry.get("type") != "InternalIP":
            continue
        ip = ipaddress.ip_address(entry["ip"])
        if isinstance(ip, ipaddress.IPv4Address):
            ipv4 = ipv4 or ip
        else:
            ipv6 = ipv6 or ip
    ipam = spec.get("ipam") or {}
    node = NodeInfo(
        name=name,
        ipv4=ipv4,
        ipv6=ipv6,
        vtep_mac=spec.get("vtepMAC"),
        pod_cidrs=routed_cidrs(
            ipam, status.get("ipam") or {}, {a for f in _mode_addresses() for a in f(spec, status)}
        ),
        router_ips=tuple(ipaddress.ip_address(a) for a in spec.get("routerIPs") or []),
        health=str(status.get("health") or "ok"),
        labels=tuple(sorted((str(k), str(v)) for k, v in (spec.get("labels") or {}).items())),
    )
    requested = tuple(ipaddress.ip_network(c) for c in ipam.get("requestedPodCIDRs") or [])
    return NodeRecord(node=node, requested_pod_cidrs=requested)


@functools.cache
def _mode_addresses() -> tuple[Callable[[Mapping[str, Any], Mapping[str, Any]], Iterable[str]], ...]:
    """The IPAM modes' readers of a node's addresses beyond its CIDRs (``IpamSpec.kube_addresses``)."""
    return tuple(spec.part("kube_addresses") for spec in IPAM_MODES.specs() if spec.kube_addresses)


def routed_cidrs(
    spec_ipam: Mapping[str, Any], status_ipam: Mapping[str, Any], extra: Iterable[str] = ()
) -> tuple[Any, ...]:
    """What peers route to a node, whichever IPAM mode filled its PodnetNode: the pod CIDRs
    (``spec.ipam.podCIDRs``), every CIDR allocated to it from any pool (``spec.ipam.pools``), its
    pool's addresses plus those still in use, collapsed (``spec.ipam.pool``: an address in use stays
    routed after it left the pool, so its pod keeps working), and the ``extra`` addresses a mode
    reads from the PodnetNode (``IpamSpec.kube_addresses``)."""
    found = [ipaddress.ip_network(c) for c in spec_ipam.get("podCIDRs") or []]
    for entry in (spec_ipam.get("pools") or {}).get("allocated") or []:
        found += [ipaddress.ip_network(c) for c in entry.get("cidrs") or []]
    addresses = {*(spec_ipam.get("pool") or {}), *(status_ipam.get("used") or {}), *extra}
    hosts = [ipaddress.ip_network(a) for a in addresses]
    for family in (4, 6):
        found += ipaddress.collapse_addresses(h for h in hosts if h.version == family)  # type: ignore[arg-type]
    return tuple(dict.fromkeys(found))


POD_CIDR_ANNOTATIONS = {
    4: ("network.podnet.io/ipv4-pod-cidr", "network.cilium.io/ipv4-pod-cidr"),
    6: ("network.podnet.io/ipv6-pod-cidr", "network.cilium.io/ipv6-pod-cidr"),
}


def node_pod_cidrs(
    spec_pod_cidrs: list[str] | None, annotations: Mapping[str, str] | None
) -> tuple[Any, ...]:
    """A Node's pod CIDRs as ``ipam.mode: kubernetes`` reads them: ``spec.podCIDRs`` (what
    kube-controller-manager's node IPAM controller assigned), else Cilium's fallback, the
    annotations (podnet's names first, Cilium's accepted), one per family."""
    if spec_pod_cidrs:
        return tuple(ipaddress.ip_network(c) for c in spec_pod_cidrs)
    found = []
    for names in POD_CIDR_ANNOTATIONS.values():
        value = next((annotations[n] for n in names if annotations and annotations.get(n)), None)
        if value:
            found.append(ipaddress.ip_network(value))
    return tuple(found)
