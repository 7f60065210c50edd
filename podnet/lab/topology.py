"""The lab's topology file: parsed into frozen objects and validated before anything is created.

Every error names the offending key path and value (``nodes[1].gateway: 172.16.9.1 is not ...``)
and says what to do, so a bad file fails before a single namespace exists.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from podnet.config.yamlfile import DuplicateKeyError, load_yaml
from podnet.lab.cloudtopo import expand_cloud, with_control_planes
from podnet.lab.topocheck import check_addresses, check_gateways, check_names, check_p2p, check_pools
from podnet.lab.topomodel import (
    DEFAULT_MTU,
    Host,
    Interface,
    KubeNamespace,
    Network,
    Pod,
    StaticRoute,
    Topology,
    TopologyError,
    checked_mapping,
)

__all__ = [
    "DEFAULT_MTU",
    "Host",
    "Interface",
    "KubeNamespace",
    "Network",
    "Pod",
    "StaticRoute",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_topology",
    "resolve_topology_path",
]

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
POD_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
CONTROL_PLANE = "cp"


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
        "cloud",
    }
    for key in data:
        if key not in known:
            raise TopologyError(f"{key}: unknown top-level key (known: {', '.join(sorted(known))})")
    cloud = None
    if data.get("cloud") is not None:
        data, cloud = expand_cloud(data)
    name = str(data.get("name", default_name))
    if not LAB_NAME_RE.match(name):
        raise TopologyError(
            f"name: {name!r} is not a valid lab name (lowercase letters, digits and '-', "
            "starting with a letter, at most 16 characters)"
        )
    networks = _parse_networks(data.get("networks"))
    if cloud is not None:
        networks = [
            dataclasses.replace(n, vpc=True) if n.cidr.subnet_of(cloud.vpc_cidr) else n for n in networks
        ]
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
    hosts = _with_ipv6_gateways(hosts)
    if cloud is not None:
        cloud = with_control_planes(cloud, hosts)
    check_names(hosts, networks)
    check_addresses(hosts, netmap)
    check_p2p(hosts)
    check_gateways(hosts, netmap)
    pods = _parse_pods(data.get("pods"), [h.name for h in hosts if h.role == "node"])
    clash = {p.name for p in pods} & ({h.name for h in hosts} | {f"sw-{n.name}" for n in networks})
    if clash:
        raise TopologyError(f"pods: name {sorted(clash)[0]!r} is already a host's name; rename the pod")
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, Mapping):
        raise TopologyError(f"cluster: must be a mapping of agent settings, not {cluster!r}")
    check_pools(hosts, networks, cluster)
    control = data.get("controlPlane") or {}
    tls, kube = control.get("etcdTLS", True), control.get("kubernetes", False)
    for key, value in (("etcdTLS", tls), ("kubernetes", kube)):
        if not isinstance(value, bool):
            raise TopologyError(f"controlPlane.{key}: {value!r} is not true or false")
    real = _real_kubelets(control.get("kubelet", "lab"), hosts)
    install = control.get("podnet", "lab")
    if install not in INSTALLS:
        raise TopologyError(
            f"controlPlane.podnet: {install!r} is not one of {', '.join(INSTALLS)} (lab: the lab runs "
            "agents and operator; manifests: it applies deploy/kubernetes/; none: nodes start without podnet)"
        )
    return Topology(
        name, tuple(networks), tuple(hosts), pods, dict(cluster), etcd_tls=tls, kubernetes=kube,
        namespaces=_parse_namespaces(data.get("namespaces")), cloud=cloud, real_kubelets=real,
        podnet_install=install,
    )  # fmt: skip


INSTALLS = ("lab", "manifests", "none")


def _real_kubelets(raw: Any, hosts: Sequence[Host]) -> tuple[str, ...]:
    """``controlPlane.kubelet``: ``lab`` (the lab plays kubelet, the default), ``real`` (a real
    kubelet and containerd on every node) or a list of the nodes that get them."""
    nodes = [h.name for h in hosts if h.role == "node"]
    if raw in ("lab", None):
        return ()
    if raw == "real":
        chosen = nodes
    elif isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        unknown = sorted(set(raw) - set(nodes))
        if unknown:
            raise TopologyError(
                f"controlPlane.kubelet: {', '.join(unknown)} is no node (nodes: {', '.join(nodes)})"
            )
        chosen = [n for n in nodes if n in raw]
    else:
        raise TopologyError(f"controlPlane.kubelet: {raw!r} is not `lab`, `real` or a list of nodes")
    return tuple(chosen)  # (they need datastore: kubernetes: checked with the --set overrides applied)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise TopologyError(f"{key}: must be a list, not {type(value).__name__}")
    return value


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
        m = checked_mapping(item, where, {"name", "cidr", "ipv6", "mtu"})
        ipv6 = _optional(m, "ipv6", where, ipaddress.IPv6Network, "an IPv6 network like fd00:2::/64")
        if m.get("cidr") is None and ipv6 is None:
            raise TopologyError(f"{where}.cidr: missing; give the segment an IPv4 cidr, an ipv6 one, or both")
        cidr = _v4_network(m["cidr"], f"{where}.cidr") if m.get("cidr") is not None else None
        nets.append(Network(_name(m, where), cidr, ipv6, _mtu(m.get("mtu", DEFAULT_MTU), f"{where}.mtu")))
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            for mine, theirs in ((a.cidr, b.cidr), (a.ipv6, b.ipv6)):
                if mine is not None and theirs is not None and mine.overlaps(theirs):
                    raise TopologyError(
                        f"networks: {a.name} ({mine}) overlaps {b.name} ({theirs}); "
                        "give each segment its own CIDR"
                    )
    return nets


def _optional(m: Mapping[str, Any], key: str, where: str, parse: Any, what: str) -> Any:
    """``parse(m[key])``, None when the key is absent; else the error naming ``where.key``."""
    if m.get(key) is None:
        return None
    try:
        return parse(str(m[key]))
    except ValueError as e:
        raise TopologyError(f"{where}.{key}: {m[key]!r} is not {what} ({e})") from e


def _v4_network(value: Any, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError as e:
        raise TopologyError(f"{where}: {value!r} is not an IPv4 CIDR like 172.16.2.0/24 ({e})") from e


def _mtu(value: Any, where: str) -> int:
    if not isinstance(value, int) or not 576 <= value <= 9216:
        raise TopologyError(f"{where}: {value!r} is not an MTU between 576 and 9216")
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
    addr = None
    if net.cidr is None:
        if raw.get("address") is not None:
            raise TopologyError(
                f"{where}.address: network {net.name} is IPv6-only ({net.ipv6}); give the host ipv6: instead"
            )
        if raw.get("ipv6") is None:
            raise TopologyError(f"{where}.ipv6: missing; give the host an address in {net.ipv6}")
    elif raw.get("address") is None:
        raise TopologyError(f"{where}.address: missing; give the host an address in {net.cidr}")
    else:
        addr = _address_on(raw["address"], f"{where}.address", net.name, net.cidr)
    ipv6 = None
    if raw.get("ipv6") is not None:
        if net.ipv6 is None:
            raise TopologyError(f"{where}.ipv6: network {net.name} has no ipv6 CIDR")
        ipv6 = _address_on(raw["ipv6"], f"{where}.ipv6", net.name, net.ipv6)
    return Interface(ifname, addr, network=net.name, ipv6=ipv6, mtu=net.mtu)


def _parse_router(raw: Any, where: str, netmap: Mapping[str, Network]) -> Host:
    m = checked_mapping(raw, where, {"name", "asn", "bgp", "interfaces", "routes"})
    name = _name(m, where)
    ifaces: list[Interface] = []
    items = m.get("interfaces")
    if not isinstance(items, list) or not items:
        raise TopologyError(f"{where}.interfaces: a router needs a list of interfaces")
    for j, item in enumerate(items):
        iw = f"{where}.interfaces[{j}]"
        im = checked_mapping(item, iw, {"network", "peer", "address", "ipv6"})
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
    addr = None
    if value is None and im.get("ipv6") is None:
        raise TopologyError(f"{where}.address: missing; give the link an IPv4 /30, an ipv6 /126, or both")
    if value is not None:
        try:
            addr = ipaddress.IPv4Interface(str(value))
        except ValueError as e:
            raise TopologyError(f"{where}.address: {value!r} is not an IPv4 address with prefix ({e})") from e
        if "/" not in str(value) or addr.network.prefixlen < 30:
            raise TopologyError(f"{where}.address: a router link needs a /30 or /31 address, got {value!r}")
    ipv6 = None
    if im.get("ipv6") is not None:
        value6 = im["ipv6"]
        try:
            ipv6 = ipaddress.IPv6Interface(str(value6))
        except ValueError as e:
            raise TopologyError(f"{where}.ipv6: {value6!r} is not an IPv6 address with prefix ({e})") from e
        if "/" not in str(value6) or ipv6.network.prefixlen < 64:
            raise TopologyError(
                f"{where}.ipv6: a router link needs a /64 to /127 address like fd00:0:1::1/126, "
                f"got {value6!r}"
            )
    return Interface(f"to-{peer}", addr, peer=peer, ipv6=ipv6)


def _static_route(raw: Any, where: str) -> StaticRoute:
    m = checked_mapping(raw, where, {"to", "via"})
    try:
        via = ipaddress.ip_address(str(m.get("via")))
    except ValueError as e:
        raise TopologyError(f"{where}.via: {m.get('via')!r} is not an IP address") from e
    try:
        to = ipaddress.ip_network(str(m.get("to")))
    except ValueError as e:
        raise TopologyError(f"{where}.to: {m.get('to')!r} is not a CIDR like 172.16.8.0/24 ({e})") from e
    if to.version != via.version:
        raise TopologyError(f"{where}: {to} and via {via} are of different IP families")
    return StaticRoute(to, via)


def _parse_endhost(
    raw: Any, where: str, netmap: Mapping[str, Network], role: str, default: str | None = None
) -> Host:
    allowed = {"name", "network", "address", "ipv6", "gateway", "ipv6Gateway", "interfaces"}
    if role == "node":
        allowed |= {"podCIDR", "config"}
    m = checked_mapping(raw, where, allowed)
    if default and "name" not in m:
        m = {**m, "name": default}
    name = _name(m, where)
    ifaces = [_network_interface(m, where, netmap, "eth0")]
    for j, item in enumerate(m.get("interfaces") or []):
        iw = f"{where}.interfaces[{j}]"
        im = checked_mapping(item, iw, {"name", "network", "address", "ipv6"})
        ifname = str(im.get("name", f"eth{j + 1}"))
        if not re.match(r"^[a-z][a-z0-9]{0,14}$", ifname) or ifname in {i.name for i in ifaces}:
            raise TopologyError(f"{iw}.name: {ifname!r} is not a free interface name on {name}")
        ifaces.append(_network_interface(im, iw, netmap, ifname))
    gateway = _optional(m, "gateway", where, ipaddress.IPv4Address, "an IPv4 address")
    gateway6 = _optional(m, "ipv6Gateway", where, ipaddress.IPv6Address, "an IPv6 address")
    pod_cidr = _v4_network(m["podCIDR"], f"{where}.podCIDR") if m.get("podCIDR") is not None else None
    config = m.get("config") or {}
    if not isinstance(config, Mapping):
        raise TopologyError(f"{where}.config: must be a mapping of agent settings")
    return Host(
        name, role, tuple(ifaces), gateway=gateway, gateway6=gateway6, pod_cidr=pod_cidr, config=dict(config)
    )


def _with_ipv6_gateways(hosts: list[Host]) -> list[Host]:
    """A host with an IPv4 gateway and an IPv6 address but no ``ipv6Gateway`` takes the IPv6
    address of the same router on the same network (what a dual-stack segment's RA would give)."""
    out = []
    for h in hosts:
        has_v6 = h.primary.ipv6 is not None
        if h.role != "router" and h.gateway is not None and h.gateway6 is None and has_v6:
            found = (
                i.ipv6.ip
                for r in hosts
                if r.role == "router"
                for i in r.interfaces
                if i.network == h.primary.network and h.gateway in i.ips and i.ipv6 is not None
            )
            h = dataclasses.replace(h, gateway6=next(found, None))
        out.append(h)
    return out


ETCD_MEMBERS = (1, 3, 5)


def _control_planes(raw: Any, networks: Sequence[Network], hosts: Sequence[Host]) -> list[Host]:
    """The hosts the lab adds for etcd, one per member (``etcdMembers``: 1, 3 or 5): on the given
    network (default: the first), the first at ``address`` or the highest free address, the others
    at the next free addresses below it."""
    known = {"network", "address", "gateway", "etcdMembers", "etcdTLS", "kubernetes", "kubelet", "podnet"}
    m = checked_mapping(raw or {}, "controlPlane", known)
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
    cidr = net.cidr or net.ipv6  # an IPv6-only segment: etcd listens on IPv6
    assert cidr is not None
    family = cidr.version
    used = {ip for h in hosts for i in h.interfaces for ip in i.ips}
    free = [a for a in _highest_hosts(cidr, members + len(used)) if a not in used]
    addresses = (
        [m["address"], *(a for a in free if str(a) != str(m["address"]))] if m.get("address") else free
    )
    if len(addresses) < members:
        raise TopologyError(
            f"controlPlane: network {net.name} ({cidr}) has no free address for {members} etcd member(s)"
        )
    gateway = m.get("gateway")
    if gateway is None:
        gateway = next(
            (
                a.ip
                for h in hosts
                if h.role == "router"
                for i in h.interfaces
                if i.network == net.name and (a := i.address_of(family)) is not None
            ),
            None,
        )
    found = []
    key, gateway_key = ("address", "gateway") if family == 4 else ("ipv6", "ipv6Gateway")
    for i in range(members):
        name = CONTROL_PLANE if i == 0 else f"{CONTROL_PLANE}{i + 1}"
        raw_host = {"name": name, "network": net.name, key: str(addresses[i])}
        if gateway is not None:
            raw_host[gateway_key] = str(gateway)
        found.append(_parse_endhost(raw_host, "controlPlane", netmap, "controlplane"))
    return found


def _highest_hosts(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network, count: int) -> list[Any]:
    """The ``count`` highest host addresses of ``cidr``, highest first (an IPv6 /64 has too many
    to list: they are counted down from its last address but one)."""
    last = int(cidr.broadcast_address) - 1
    return [ipaddress.ip_address(a) for a in range(last, max(last - count, int(cidr.network_address)), -1)]


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
        m = checked_mapping(item, f"namespaces[{i}]", {"name", "labels", "annotations"})
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
        m = checked_mapping(
            item, where, {"name", "node", "count", "pool", "labels", "namespace", "annotations"}
        )
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
