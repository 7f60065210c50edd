"""The lab topology's frozen objects (what ``topology.load_topology`` returns)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.config.pairs import merge

DEFAULT_MTU = 1500


def url_host(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as the host part of a URL or ``host:port`` (``[fd00::1]`` for IPv6)."""
    return f"[{ip}]" if ip.version == 6 else str(ip)


class TopologyError(ValueError):
    """A topology file that cannot be built; the message names the key and the bad value."""


def checked_mapping(raw: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    """``raw`` when it is a mapping with only ``allowed`` keys; else the error naming ``where``."""
    if not isinstance(raw, Mapping):
        raise TopologyError(f"{where}: must be a mapping, not {raw!r}")
    for key in raw:
        if key not in allowed:
            raise TopologyError(f"{where}.{key}: unknown key (known: {', '.join(sorted(allowed))})")
    return raw


@dataclass(frozen=True)
class Network:
    """An underlay L2 segment: a bridge inside its own namespace (``pn-<lab>-sw-<name>``)."""

    name: str
    cidr: ipaddress.IPv4Network | None  # None: an IPv6-only segment (``ipv6`` is then set)
    ipv6: ipaddress.IPv6Network | None = None
    mtu: int = DEFAULT_MTU
    vpc: bool = False  # a VPC subnet: no bridge, every host is linked to the VPC router (lab.vpc)


@dataclass(frozen=True)
class Interface:
    """One interface of a host: on a network (``network``) or a point-to-point link (``peer``)."""

    name: str
    address: ipaddress.IPv4Interface | None  # None on an IPv6-only segment or link
    network: str | None = None
    peer: str | None = None
    ipv6: ipaddress.IPv6Interface | None = None
    mtu: int = DEFAULT_MTU

    def address_of(self, family: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """This interface's address of ``family`` (4 or 6), None when it has none."""
        return self.address if family == 4 else self.ipv6

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The interface's main address: its IPv4 one, its IPv6 one on an IPv6-only segment."""
        main = self.address or self.ipv6
        assert main is not None  # the parser gives every interface one
        return main.ip

    @property
    def ips(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(a.ip for a in (self.address, self.ipv6) if a is not None)


@dataclass(frozen=True)
class StaticRoute:
    """``ip route replace <to> via <via>`` on a router; both of one family."""

    to: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Host:
    """A namespace on the underlay: a router, a cluster node, the control plane or the world host."""

    name: str
    role: str  # "router" | "node" | "controlplane" | "external"
    interfaces: tuple[Interface, ...]
    gateway: ipaddress.IPv4Address | None = None
    gateway6: ipaddress.IPv6Address | None = None  # ``ipv6Gateway``, else the IPv4 gateway's router's
    routes: tuple[StaticRoute, ...] = ()
    asn: int | None = None
    bgp: Mapping[str, Any] = field(default_factory=dict)
    pod_cidr: ipaddress.IPv4Network | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> Interface:
        return self.interfaces[0]


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    pool: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace: str = "default"
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubeNamespace:
    """A Kubernetes namespace the lab creates (``namespaces:``), for its labels and annotations."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    name: str
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...]
    pods: tuple[Pod, ...]
    cluster: Mapping[str, Any]
    source: str = ""
    etcd_tls: bool = True  # controlPlane.etcdTLS: etcd with mutual TLS (a lab CA), the default
    kubernetes: bool = False  # controlPlane.kubernetes: a kube-apiserver on the control plane
    namespaces: tuple[KubeNamespace, ...] = ()  # Kubernetes namespaces with labels/annotations
    cloud: Any = None  # lab.cloudtopo.Cloud: the topology's VPC (``cloud:``), None without one
    real_kubelets: tuple[str, ...] = ()  # controlPlane.kubelet: nodes with a real kubelet + containerd
    podnet_install: str = "lab"  # controlPlane.podnet: lab (processes) | manifests | none (DaemonSet)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for n in self.networks:
            if n.name == name:
                return n
        raise KeyError(name)

    def on_vpc(self, iface: Interface) -> bool:
        """True for an interface on a VPC subnet (made by the lab's EC2, not by the builder)."""
        return iface.network is not None and self.network(iface.network).vpc

    def by_role(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role == role)

    @property
    def nodes(self) -> tuple[Host, ...]:
        return self.by_role("node")

    @property
    def routers(self) -> tuple[Host, ...]:
        return self.by_role("router")

    @property
    def control_plane(self) -> Host:
        """The first control-plane host (etcd's first member; the operator runs there)."""
        return self.by_role("controlplane")[0]

    @property
    def control_planes(self) -> tuple[Host, ...]:
        """Every control-plane host: one etcd member each (``controlPlane.etcdMembers``)."""
        return self.by_role("controlplane")

    def node_config(self, node: str) -> dict[str, Any]:
        """The agent configuration of one node: the cluster's, with the node's overrides on top."""
        return merge(self.cluster, self.host(node).config)
