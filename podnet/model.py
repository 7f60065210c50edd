"""Cluster objects shared by the store, the operator, the agent and the lab.

Every object here is a frozen dataclass with a JSON round trip (``to_json``/``from_json``),
because etcd holds them as JSON values and the planner compares them by value.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class NodeInfo:
    """A node as the cluster sees it: what every peer needs to reach its pods.

    ``router_ips`` are the addresses the node's pods use as their gateway (one per pod CIDR,
    the first host address of it); they live on the node's ``podnet_host`` device and serve
    as the tunnel endpoint address inside the overlay.
    """

    name: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None = None
    vtep_mac: str | None = None
    pod_cidrs: tuple[IPNetwork, ...] = ()
    router_ips: tuple[IPAddress, ...] = ()
    health: str = "ok"
    labels: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ipv4": str(self.ipv4) if self.ipv4 else None,
            "ipv6": str(self.ipv6) if self.ipv6 else None,
            "vtepMAC": self.vtep_mac,
            "podCIDRs": [str(c) for c in self.pod_cidrs],
            "routerIPs": [str(a) for a in self.router_ips],
            "health": self.health,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeInfo:
        return cls(
            name=str(data["name"]),
            ipv4=ipaddress.IPv4Address(data["ipv4"]) if data.get("ipv4") else None,
            ipv6=ipaddress.IPv6Address(data["ipv6"]) if data.get("ipv6") else None,
            vtep_mac=data.get("vtepMAC"),
            pod_cidrs=tuple(ipaddress.ip_network(c) for c in data.get("podCIDRs", [])),
            router_ips=tuple(ipaddress.ip_address(a) for a in data.get("routerIPs", [])),
            health=str(data.get("health", "ok")),
            labels=tuple(sorted((str(k), str(v)) for k, v in (data.get("labels") or {}).items())),
        )

    def router_ip_for(self, family: int) -> IPAddress | None:
        """The node's router (gateway) address of one IP family (4 or 6), if it has one."""
        return next((a for a in self.router_ips if a.version == family), None)


@dataclass(frozen=True)
class Endpoint:
    """A pod's network attachment on one node, as the agent records it."""

    container_id: str
    ifname: str
    netns: str
    host_ifname: str
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    gateways: tuple[IPAddress, ...] = ()  # one per address, in the same order
    default_route: bool = True  # this attachment owns the pod's default route (the first one does)
    pod_name: str = ""
    pod_namespace: str = ""
    netns_id: str = ""  # dev:inode of the pod's namespace (how the agent finds it again by itself)
    pod_uid: str = ""  # K8S_POD_UID, checked against the Pod object (datastore: kubernetes)
    pod_labels: tuple[tuple[str, str], ...] = ()  # the Pod's, as the API server had them at ADD
    pod_annotations: tuple[tuple[str, str], ...] = ()
    namespace_labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "containerID": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "netnsID": self.netns_id,
            "hostIfname": self.host_ifname,
            "addresses": [str(a) for a in self.addresses],
            "gateways": [str(g) for g in self.gateways],
            "defaultRoute": self.default_route,
            "podName": self.pod_name,
            "podNamespace": self.pod_namespace,
            "podUID": self.pod_uid,
            "podLabels": dict(self.pod_labels),
            "podAnnotations": dict(self.pod_annotations),
            "namespaceLabels": dict(self.namespace_labels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        return cls(
            container_id=str(data["containerID"]),
            ifname=str(data["ifname"]),
            netns=str(data.get("netns", "")),
            host_ifname=str(data["hostIfname"]),
            addresses=tuple(ipaddress.ip_interface(a) for a in data.get("addresses", [])),
            gateways=tuple(ipaddress.ip_address(g) for g in data.get("gateways", [])),
            default_route=bool(data.get("defaultRoute", True)),
            pod_name=str(data.get("podName", "")),
            pod_namespace=str(data.get("podNamespace", "")),
            netns_id=str(data.get("netnsID", "")),
            pod_uid=str(data.get("podUID", "")),
            pod_labels=_pairs(data.get("podLabels")),
            pod_annotations=_pairs(data.get("podAnnotations")),
            namespace_labels=_pairs(data.get("namespaceLabels")),
        )


def _pairs(mapping: Any) -> tuple[tuple[str, str], ...]:
    """A JSON object of strings as sorted pairs (frozen, comparable); anything else as none."""
    if not isinstance(mapping, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))
