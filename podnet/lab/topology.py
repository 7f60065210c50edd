"""The lab's topology file: parsed into frozen objects and validated before anything is created.

Every error names the offending key path and value (``nodes[1].gateway: 172.16.9.1 is not ...``)
and says what to do, so a bad file fails before a single namespace exists.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from podnet.config.pairs import merge
from podnet.config.yamlfile import DuplicateKeyError, load_yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
POD_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
CONTROL_PLANE = "cp"
DEFAULT_MTU = 1500


class TopologyError(ValueError):
    """A topology file that cannot be built; the message names the key and the bad value."""


@dataclass(frozen=True)
class Network:
    """An underlay L2 segment: a bridge inside its own namespace (``pn-<lab>-sw-<name>``)."""

    name: str
    cidr: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network | None = None
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True)
class Interface:
    """One interface of a host: on a network (``network``) or a point-to-point link (``peer``)."""

    name: str
    address: ipaddress.IPv4Interface
    network: str | None = None
    peer: str | None = None
    ipv6: ipaddress.IPv6Interface | None = None
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True)
class StaticRoute:
    to: ipaddress.IPv4Network
    via: ipaddress.IPv4Address


@dataclass(frozen=True)
class Host:
    """A namespace on the underlay: a router, a cluster node, the control plane or the world host."""

    name: str
    role: str  # "router" | "node" | "controlplane" | "external"
    interfaces: tuple[Interface, ...]
    gateway: ipaddress.IPv4Address | None = None
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


# ---------------------------------------------------------------------------------------------
# parsing


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def resolve_topology_path(path: str | Path) -> Path:
    """A file path as given, or the name of a built-in example (``two-subnets``, ``l2`` ...)."""
    p = Path(path)
    if not p.exists() and not p.suffix and (EXAMPLES_DIR / f"{p}.yaml").exists():
        return EXAMPLES_DIR / f"{p}.yaml"
    return p


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file (or a built-in example by name)."""
    p = resolve_topology_path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TopologyError(f"{p}: cannot read the topology file: {e.strerror}") from e
    try:
        data = load_yaml(text)
    except DuplicateKeyError as e:
        raise TopologyError(f"{p}: {e}") from e
    except yaml.YAMLError as e:
        raise TopologyError(f"{p}: not valid YAML: {e}") from e
    topo = parse_topology(data, default_name=p.stem)
    return dataclasses.replace(topo, source=str(p.resolve()))


def parse_topology(data: Any, default_name: str = "lab") -> Topology:
    """Validate a topology mapping (as loaded from YAML) into a ``Topology``."""
    if not isinstance(data, Mapping):
        raise TopologyError("the topology file must be a mapping with networks, nodes, ...")
    known = {
        "name",
        "networks",
        "routers",
        "nodes",
        "pods",
        "cluster",
        "external",
        "controlPlane",
        "namespaces",
    }
    for key in data:
        if key not in known:
            raise TopologyError(f"{key}: unknown top-level key (known: {', '.join(sorted(known))})")
    name = str(data.get("name", default_name))
    if not LAB_NAME_RE.match(name):
        raise TopologyError(
            f"name: {name!r} is not a valid lab name (lowercase letters, digits and '-', "
            "starting with a letter, at most 16 characters)"
        )
    networks = _parse_networks(data.get("networks"))
    netmap = {n.name: n for n in networks}
    hosts: list[Host] = []
    for i, raw in enumerate(_list(data, "routers")):
        hosts.append(_parse_router(raw, f"routers[{i}]", netmap))
    for i, raw in enumerate(_list(data, "nodes")):
        hosts.append(_parse_endhost(raw, f"nodes[{i}]", netmap, "node"))
    if not any(h.role == "node" for h in hosts):
        raise TopologyError("nodes: a lab needs at least one node")
    if data.get("external") is not None:
        hosts.append(_parse_endhost(data["external"], "external", netmap, "external", default="world"))
    hosts.extend(_control_planes(data.get("controlPlane"), networks, hosts))
    _check_names(hosts, networks)
    _check_addresses(hosts, netmap)
    _check_p2p(hosts)
    _check_gateways(hosts, netmap)
    pods = _parse_pods(data.get("pods"), [h.name for h in hosts if h.role == "node"])
    clash = {p.name for p in pods} & ({h.name for h in hosts} | {f"sw-{n.name}" for n in networks})
    if clash:
        raise TopologyError(f"pods: name {sorted(clash)[0]!r} is already a host's name; rename the pod")
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, Mapping):
        raise TopologyError(f"cluster: must be a mapping of agent settings, not {cluster!r}")
    _check_pools(hosts, networks, cluster)
    control = data.get("controlPlane") or {}
    tls, kube = control.get("etcdTLS", True), control.get("kubernetes", False)
    for key, value in (("etcdTLS", tls), ("kubernetes", kube)):
        if not isinstance(value, bool):
            raise TopologyError(f"controlPlane.{key}: {value!r} is not true or false")
    return Topology(
        name, tuple(networks), tuple(hosts), pods, dict(cluster), etcd_tls=tls, kubernetes=kube,
        namespaces=_parse_namespaces(data.get("namespaces")),
    )  # fmt: skip


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise TopologyError(f"{key}: must be a list, not {type(value).__name__}")
    return value


def _mapping(raw: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise TopologyError(f"{where}: must be a mapping, not {raw!r}")
    for key in raw:
        if key not in allowed:
            raise TopologyError(f"{where}.{key}: unknown key (known: {', '.join(sorted(allowed))})")
    return raw


def _name(raw: Mapping[str, Any], where: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TopologyError(
            f"{where}.name: {name!r} is not a valid name (lowercase letters, digits and '-', "
            "starting with a letter, at most 12 characters)"
        )
    return name


def _parse_networks(raw: Any) -> list[Network]:
    if not isinstance(raw, list) or not raw:
        raise TopologyError("networks: a lab needs a list of at least one network")
    nets: list[Network] = []
    for i, item in enumerate(raw):
        where = f"networks[{i}]"
        m = _mapping(item, where, {"name", "cidr", "ipv6", "mtu"})
        cidr = _v4_network(m.get("cidr"), f"{where}.cidr")
        ipv6 = None
        if m.get("ipv6") is not None:
            try:
                ipv6 = ipaddress.IPv6Network(str(m["ipv6"]))
            except ValueError as e:
                raise TopologyError(f"{where}.ipv6: {m['ipv6']!r} is not an IPv6 network: {e}") from e
        nets.append(Network(_name(m, where), cidr, ipv6, _mtu(m.get("mtu", DEFAULT_MTU), f"{where}.mtu")))
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            if a.cidr.overlaps(b.cidr):
                raise TopologyError(
                    f"networks: {a.name} ({a.cidr}) overlaps {b.name} ({b.cidr}); "
                    "give each segment its own CIDR"
                )
    return nets


def _v4_network(value: Any, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError as e:
        raise TopologyError(f"{where}: {value!r} is not an IPv4 CIDR like 172.16.2.0/24 ({e})") from e


def _mtu(value: Any, where: str) -> int:
    if not isinstance(value, int) or not 576 <= value <= 9000:
        raise TopologyError(f"{where}: {value!r} is not an MTU between 576 and 9000")
    return value


def _address_on(
    value: Any, where: str, net_name: str, cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> Any:
    """An address on a segment, either family: ``172.16.2.2`` or ``fd00::2`` take the segment's
    prefix; with a prefix it must be the segment's. Returns an IPv4Interface or IPv6Interface."""
    family = ipaddress.IPv4Interface if cidr.version == 4 else ipaddress.IPv6Interface
    try:
        addr = family(str(value))
    except ValueError as e:
        raise TopologyError(f"{where}: {value!r} is not an IPv{cidr.version} address ({e})") from e
    if "/" not in str(value):
        addr = family(f"{addr.ip}/{cidr.prefixlen}")
    if addr.ip not in cidr:
        segment = f"network {net_name} ({cidr})" if cidr.version == 4 else f"{net_name}'s {cidr}"
        raise TopologyError(f"{where}: {addr.ip} is outside {segment}")
    if addr.network != cidr:
        raise TopologyError(f"{where}: prefix /{addr.network.prefixlen} differs from {net_name}'s {cidr}")
    if (
        cidr.version == 4
        and cidr.prefixlen < 31
        and addr.ip in (cidr.network_address, cidr.broadcast_address)
    ):
        raise TopologyError(f"{where}: {addr.ip} is the network or broadcast address of {cidr}")
    return addr


def _network_interface(
    raw: Mapping[str, Any], where: str, netmap: Mapping[str, Network], ifname: str
) -> Interface:
    net_name = raw.get("network")
    if net_name not in netmap:
        raise TopologyError(
            f"{where}.network: unknown network {net_name!r} (known: {', '.join(sorted(netmap))})"
        )
    net = netmap[net_name]
    if raw.get("address") is None:
        raise TopologyError(f"{where}.address: missing; give the host an address in {net.cidr}")
    addr = _address_on(raw["address"], f"{where}.address", net.name, net.cidr)
    ipv6 = None
    if raw.get("ipv6") is not None:
        if net.ipv6 is None:
            raise TopologyError(f"{where}.ipv6: network {net.name} has no ipv6 CIDR")
        ipv6 = _address_on(raw["ipv6"], f"{where}.ipv6", net.name, net.ipv6)
    return Interface(ifname, addr, network=net.name, ipv6=ipv6, mtu=net.mtu)


def _parse_router(raw: Any, where: str, netmap: Mapping[str, Network]) -> Host:
    m = _mapping(raw, where, {"name", "asn", "bgp", "interfaces", "routes"})
    name = _name(m, where)
    ifaces: list[Interface] = []
    items = m.get("interfaces")
    if not isinstance(items, list) or not items:
        raise TopologyError(f"{where}.interfaces: a router needs a list of interfaces")
    for j, item in enumerate(items):
        iw = f"{where}.interfaces[{j}]"
        im = _mapping(item, iw, {"network", "peer", "address", "ipv6"})
        if ("network" in im) == ("peer" in im):
            raise TopologyError(f"{iw}: give exactly one of network (a segment) or peer (a router link)")
        if "network" in im:
            ifaces.append(_network_interface(im, iw, netmap, str(im["network"])))
        else:
            ifaces.append(_p2p_interface(im, iw))
    asn = m.get("asn")
    if asn is not None and (not isinstance(asn, int) or not 0 < asn < 2**32):
        raise TopologyError(f"{where}.asn: {asn!r} is not an AS number (1 to 4294967295)")
    routes = tuple(_static_route(r, f"{where}.routes[{k}]") for k, r in enumerate(m.get("routes") or []))
    bgp = m.get("bgp") or {}
    return Host(name, "router", tuple(ifaces), routes=routes, asn=asn, bgp=dict(bgp))


def _p2p_interface(im: Mapping[str, Any], where: str) -> Interface:
    peer = im["peer"]
    if not isinstance(peer, str) or not NAME_RE.match(peer):
        raise TopologyError(f"{where}.peer: {peer!r} is not a router name")
    value = im.get("address")
    try:
        addr = ipaddress.IPv4Interface(str(value))
    except ValueError as e:
        raise TopologyError(f"{where}.address: {value!r} is not an IPv4 address with prefix ({e})") from e
    if "/" not in str(value) or addr.network.prefixlen < 30:
        raise TopologyError(f"{where}.address: a router link needs a /30 or /31 address, got {value!r}")
    return Interface(f"to-{peer}", addr, peer=peer)


def _static_route(raw: Any, where: str) -> StaticRoute:
    m = _mapping(raw, where, {"to", "via"})
    try:
        via = ipaddress.IPv4Address(str(m.get("via")))
    except ValueError as e:
        raise TopologyError(f"{where}.via: {m.get('via')!r} is not an IPv4 address") from e
    return StaticRoute(_v4_network(m.get("to"), f"{where}.to"), via)


def _parse_endhost(
    raw: Any, where: str, netmap: Mapping[str, Network], role: str, default: str | None = None
) -> Host:
    allowed = {"name", "network", "address", "ipv6", "gateway", "interfaces"}
    if role == "node":
        allowed |= {"podCIDR", "config"}
    m = _mapping(raw, where, allowed)
    if default and "name" not in m:
        m = {**m, "name": default}
    name = _name(m, where)
    ifaces = [_network_interface(m, where, netmap, "eth0")]
    for j, item in enumerate(m.get("interfaces") or []):
        iw = f"{where}.interfaces[{j}]"
        im = _mapping(item, iw, {"name", "network", "address", "ipv6"})
        ifname = str(im.get("name", f"eth{j + 1}"))
        if not re.match(r"^[a-z][a-z0-9]{0,14}$", ifname) or ifname in {i.name for i in ifaces}:
            raise TopologyError(f"{iw}.name: {ifname!r} is not a free interface name on {name}")
        ifaces.append(_network_interface(im, iw, netmap, ifname))
    gateway = None
    if m.get("gateway") is not None:
        try:
            gateway = ipaddress.IPv4Address(str(m["gateway"]))
        except ValueError as e:
            raise TopologyError(f"{where}.gateway: {m['gateway']!r} is not an IPv4 address") from e
    pod_cidr = _v4_network(m["podCIDR"], f"{where}.podCIDR") if m.get("podCIDR") is not None else None
    config = m.get("config") or {}
    if not isinstance(config, Mapping):
        raise TopologyError(f"{where}.config: must be a mapping of agent settings")
    return Host(name, role, tuple(ifaces), gateway=gateway, pod_cidr=pod_cidr, config=dict(config))


ETCD_MEMBERS = (1, 3, 5)


def _control_planes(raw: Any, networks: Sequence[Network], hosts: Sequence[Host]) -> list[Host]:
    """The hosts the lab adds for etcd, one per member (``etcdMembers``: 1, 3 or 5): on the given
    network (default: the first), the first at ``address`` or the highest free address, the others
    at the next free addresses below it."""
    known = {"network", "address", "gateway", "etcdMembers", "etcdTLS", "kubernetes"}
    m = _mapping(raw or {}, "controlPlane", known)
    members = m.get("etcdMembers", 1)
    if members not in ETCD_MEMBERS:
        raise TopologyError(
            f"controlPlane.etcdMembers: {members!r} is not one of {', '.join(map(str, ETCD_MEMBERS))} "
            "(an etcd cluster needs an odd number of members for a quorum)"
        )
    netmap = {n.name: n for n in networks}
    net_name = m.get("network", networks[0].name)
    if net_name not in netmap:
        raise TopologyError(f"controlPlane.network: unknown network {net_name!r}")
    net = netmap[net_name]
    used = {i.address.ip for h in hosts for i in h.interfaces}
    free = [a for a in reversed(list(net.cidr.hosts())) if a not in used]
    addresses = (
        [m["address"], *(a for a in free if str(a) != str(m["address"]))] if m.get("address") else free
    )
    if len(addresses) < members:
        raise TopologyError(
            f"controlPlane: network {net.name} ({net.cidr}) has no free address for {members} etcd member(s)"
        )
    gateway = m.get("gateway")
    if gateway is None:
        gateway = next(
            (
                i.address.ip
                for h in hosts
                if h.role == "router"
                for i in h.interfaces
                if i.network == net.name
            ),
            None,
        )
    found = []
    for i in range(members):
        name = CONTROL_PLANE if i == 0 else f"{CONTROL_PLANE}{i + 1}"
        raw_host = {"name": name, "network": net.name, "address": str(addresses[i])}
        if gateway is not None:
            raw_host["gateway"] = str(gateway)
        found.append(_parse_endhost(raw_host, "controlPlane", netmap, "controlplane"))
    return found


def _check_names(hosts: Sequence[Host], networks: Sequence[Network]) -> None:
    seen: dict[str, str] = {}
    for h in hosts:
        if h.name.startswith("sw-"):
            raise TopologyError(
                f"{h.role}s: name {h.name!r} starts with 'sw-', which the lab keeps for its segments' "
                "namespaces; rename the host"
            )
        if h.name in seen:
            raise TopologyError(f"{h.role}s: name {h.name!r} is used twice ({seen[h.name]} and {h.role})")
        seen[h.name] = h.role
    names = [n.name for n in networks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TopologyError(f"networks: name {sorted(dup)[0]!r} is used twice")


def _check_addresses(hosts: Sequence[Host], netmap: Mapping[str, Network]) -> None:
    owner: dict[ipaddress.IPv4Address, str] = {}
    for h in hosts:
        attached: set[str] = set()
        for i in h.interfaces:
            if i.network and i.network in attached:
                raise TopologyError(f"{h.name}: two interfaces on network {i.network}")
            if i.network:
                attached.add(i.network)
            where = f"{h.name}.{i.name}"
            if i.address.ip in owner:
                raise TopologyError(
                    f"{where}.address: {i.address.ip} is already used by {owner[i.address.ip]}"
                )
            owner[i.address.ip] = where
            if i.peer:
                for net in netmap.values():
                    if net.cidr.overlaps(i.address.network):
                        raise TopologyError(
                            f"{where}.address: link {i.address.network} overlaps "
                            f"network {net.name} ({net.cidr})"
                        )


def _pools(cluster: Mapping[str, Any]) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """The cluster's pod pools as (setting, CIDR); none when the settings do not parse (``lab up``
    reports those with the agent's own error)."""
    from podnet.config import ConfigError, pod_pools

    try:
        pools = pod_pools(cluster)
    except ConfigError:
        return []
    return [("clusterPoolIPv4PodCIDRList", c) for c in pools]


def _check_pools(hosts: Sequence[Host], networks: Sequence[Network], cluster: Mapping[str, Any]) -> None:
    """Pod addresses never overlap the underlay: no pool or node podCIDR may overlap a network, a
    point-to-point link or any host's address (a node would take its router's address as a pod
    gateway, and the underlay would route pod traffic to the wrong place)."""
    pools = _pools(cluster) + [(f"{h.name}.podCIDR", h.pod_cidr) for h in hosts if h.pod_cidr is not None]
    for where, pool in pools:
        for net in networks:
            if pool.version == net.cidr.version and pool.overlaps(net.cidr):
                raise TopologyError(
                    f"{where}: pod CIDR {pool} overlaps network {net.name} ({net.cidr}); pick pod "
                    "addresses outside the underlay"
                )
        for h in hosts:
            for i in h.interfaces:
                if i.address.version == pool.version and (
                    i.address.ip in pool or (i.peer and i.address.network.overlaps(pool))
                ):
                    raise TopologyError(
                        f"{where}: pod CIDR {pool} contains {h.name}.{i.name}'s address {i.address.ip}; "
                        "pick pod addresses outside the underlay"
                    )


def _check_p2p(hosts: Sequence[Host]) -> None:
    routers = {h.name: h for h in hosts if h.role == "router"}
    for h in routers.values():
        for i in h.interfaces:
            if i.peer is None:
                continue
            where = f"routers.{h.name}.interfaces.peer"
            if i.peer not in routers or i.peer == h.name:
                raise TopologyError(
                    f"{where}: {i.peer!r} is not another router (known: {', '.join(routers)})"
                )
            back = [j for j in routers[i.peer].interfaces if j.peer == h.name]
            if not back:
                raise TopologyError(f"{where}: router {i.peer} has no interface with peer: {h.name}")
            if back[0].address.network != i.address.network:
                raise TopologyError(
                    f"{where}: the ends of link {h.name}-{i.peer} are in different subnets "
                    f"({i.address} and {back[0].address})"
                )


def _check_gateways(hosts: Sequence[Host], netmap: Mapping[str, Network]) -> None:
    router_addrs = {
        (i.network, i.address.ip): h.name
        for h in hosts
        if h.role == "router"
        for i in h.interfaces
        if i.network
    }
    for h in hosts:
        if h.role == "router":
            continue
        where = f"{h.role}s.{h.name}.gateway" if h.role == "node" else f"{h.role}.gateway"
        net = h.primary.network
        if h.gateway is None:
            if len(netmap) > 1 and h.role != "controlplane":
                raise TopologyError(
                    f"{where}: missing; with {len(netmap)} networks the host needs its router's address "
                    f"on {net} as gateway"
                )
            continue
        if (net, h.gateway) not in router_addrs:
            raise TopologyError(f"{where}: {h.gateway} is not the address of a router on network {net}")


K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _k8s_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not K8S_NAME_RE.match(value):
        raise TopologyError(
            f"{where}: {value!r} is not a Kubernetes name (lower case, digits, '-', at most 63)"
        )
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TopologyError(f"{where}: must be a mapping of strings, not {value!r}")
    return {k: str(v) for k, v in value.items()}


def _parse_namespaces(raw: Any) -> tuple[KubeNamespace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TopologyError("namespaces: must be a list of {name, labels, annotations}")
    found = []
    for i, item in enumerate(raw):
        m = _mapping(item, f"namespaces[{i}]", {"name", "labels", "annotations"})
        found.append(
            KubeNamespace(
                _k8s_name(m.get("name"), f"namespaces[{i}].name"),
                _string_map(m.get("labels"), f"namespaces[{i}].labels"),
                _string_map(m.get("annotations"), f"namespaces[{i}].annotations"),
            )
        )
    return tuple(found)


def _parse_pods(raw: Any, nodes: Sequence[str]) -> tuple[Pod, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TopologyError("pods: must be a list of {name, node} or {node, count} entries")
    pods: list[Pod] = []
    for i, item in enumerate(raw):
        where = f"pods[{i}]"
        m = _mapping(item, where, {"name", "node", "count", "pool", "labels", "namespace", "annotations"})
        extra = {
            "namespace": _k8s_name(m.get("namespace", "default"), f"{where}.namespace"),
            "annotations": _string_map(m.get("annotations"), f"{where}.annotations"),
        }
        targets = nodes if m.get("node") in (None, "*") else [m["node"]]
        for t in targets:
            if t not in nodes:
                raise TopologyError(f"{where}.node: unknown node {t!r} (known: {', '.join(nodes)})")
        count = m.get("count")
        if "name" in m:
            if count is not None or len(targets) != 1:
                raise TopologyError(f"{where}: a named pod needs exactly one node and no count")
            name = m["name"]
            if not isinstance(name, str) or not POD_NAME_RE.match(name):
                raise TopologyError(f"{where}.name: {name!r} is not a valid pod name")
            pods.append(
                Pod(name, targets[0], m.get("pool"), _string_map(m.get("labels"), f"{where}.labels"), **extra)
            )
            continue
        if not isinstance(count, int) or count < 1 or count > 200:
            raise TopologyError(f"{where}.count: {count!r} is not a pod count between 1 and 200")
        for t in targets:
            start = sum(1 for p in pods if p.node == t)
            for k in range(count):
                labels = _string_map(m.get("labels"), f"{where}.labels")
                pods.append(Pod(f"{t}-p{start + k + 1}", t, m.get("pool"), labels, **extra))
    names = [p.name for p in pods]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TopologyError(f"pods: name {sorted(dup)[0]!r} is used twice")
    return tuple(pods)
