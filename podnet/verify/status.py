"""``podnet status``: what one node's agent meant, next to what its kernel actually has.

The agent's status document (``podnet.agent.status``) says what the agent planned; this module
reads the node's kernel (podnet's routes, the tunnel device, neighbour and FDB entries, the nft
table, device MTUs) and, for each peer, asks the kernel how it would reach the peer's pods
(``ip route get <peer router ip>``): through the tunnel, by a direct route, via an underlay
router, or not at all. Where the node has a namespace of its own (a lab) it also pings each
peer's router address from it. ``cluster_status`` does this for every node of a cluster view.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel.neigh import dump_fdb, dump_neighbours
from podnet.datapath.kernel.route import dump_owned_routes, route_get
from podnet.datapath.tunnels import tunnel_of
from podnet.specs import routing as routing_spec
from podnet.specs import tunnel as tunnel_spec
from podnet.statusdoc.document import StatusDocument
from podnet.statusdoc.pathmtu import PathMtuStatus
from podnet.statusdoc.peers import PeerPlan
from podnet.statusdoc.routing import RoutingStatus
from podnet.verify import explain
from podnet.verify.nodereport import ClusterReport, KernelDevice, KernelObjects, NodeReport, PeerReport
from podnet.verify.probe import ping
from podnet.verify.view import ClusterView, ViewError, agent_document


@dataclass(frozen=True)
class KernelPath:
    """How the kernel reaches one address: the classified answer of ``ip route get``."""

    reach: str  # tunnel | direct-route | underlay-router | unreachable
    dev: str | None
    gateway: str | None
    text: str


def classify_path(
    dev: str | None, dev_kind: str, gateway: str | None, peer_ip: str | None, routers: dict[str, str]
) -> KernelPath:
    """Pure: name the kind of path ``ip route get`` chose (``routers`` maps gateway IP to a name)."""
    if dev is None:
        return KernelPath("unreachable", None, None, "no route")
    protocol = tunnel_of(dev, dev_kind)
    if protocol is not None:
        return KernelPath("tunnel", dev, gateway, f"{protocol.display} tunnel via {dev}")
    if gateway is not None and gateway == peer_ip:
        return KernelPath("direct-route", dev, gateway, f"direct route via node {peer_ip} dev {dev}")
    if gateway is not None:
        name = routers.get(gateway, gateway)
        return KernelPath("underlay-router", dev, gateway, f"routed by the underlay via {name} dev {dev}")
    return KernelPath("direct-route", dev, None, f"on-link dev {dev}")


def routing_summary(routing: RoutingStatus | Mapping[str, Any]) -> str:
    """``Tunnel [<tunnelProtocol>]`` or ``Native`` (Cilium's wording), plus autoDirectNodeRoutes, as
    the routing mode's spec writes it; the agent names its mode (``modeName``) and the protocol it
    tunnels with (``tunnelProtocol``, None when it never encapsulates). A ``routing`` section's JSON
    is read as one."""
    if not isinstance(routing, RoutingStatus):
        routing = RoutingStatus.from_json(routing)
    spec = routing_spec.spec_of(routing.to_json())
    return spec.summary(routing.tunnel_protocol, routing.auto_direct_node_routes)


class KernelReader:
    """Reads one node's kernel through a netlink socket bound to its namespace (or this one)."""

    def __init__(self, ipr: IPRoute, netns: str | None) -> None:
        self.ipr = ipr
        self.netns = netns
        self.links = {
            str(m.get_attr("IFLA_IFNAME")): (
                int(m["index"]),
                int(m.get_attr("IFLA_MTU")),
                _kind(m),
            )
            for m in ipr.get_links()
        }

    def path_to(self, ip: str, peer_ip: str | None, routers: dict[str, str]) -> KernelPath:
        try:
            path = route_get(self.ipr, ipaddress.ip_address(ip))
        except NetlinkError as e:
            return KernelPath("unreachable", None, None, f"no route ({e.args[-1]})")
        kind = self.links.get(path.dev or "", (0, 0, ""))[2]
        return classify_path(path.dev, kind, str(path.gateway) if path.gateway else None, peer_ip, routers)

    def nft_table(self) -> str | None:
        argv = ["nft", "list", "table", "ip", owned.NFT_TABLE]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.stdout if res.returncode == 0 else None

    def owned_objects(self) -> KernelObjects:
        """Every kernel object carrying podnet's marks (``--verbose``)."""
        devices = tuple(
            KernelDevice(n, m, k)
            for n, (_, m, k) in self.links.items()
            if n.startswith(("podnet_", owned.ENDPOINT_PREFIX))
        )
        neigh: list[str] = []
        fdb: list[str] = []
        for name, (index, _, kind) in self.links.items():
            if tunnel_of(name, kind) is not None:
                neigh += [n.describe() for n in dump_neighbours(self.ipr, index, name)]
                fdb += [f.describe() for f in dump_fdb(self.ipr, index, name)]
        return KernelObjects(
            devices,
            tuple(r.describe() for r in dump_owned_routes(self.ipr)),
            tuple(neigh),
            tuple(fdb),
            self.nft_table(),
        )


def _kind(msg: Any) -> str:
    info = msg.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def node_status(
    doc: StatusDocument,
    kernel: KernelReader,
    verbose: bool = False,
    routers: dict[str, str] | None = None,
    health_ns: str | None = None,
) -> NodeReport:
    """One node's status: the agent's document, checked against the kernel."""
    if doc.unanswered:
        return NodeReport(doc)
    routers = routers or {}
    underlay = doc.mtu.underlay_device if doc.mtu is not None else None
    tunnel = next(
        (KernelDevice(n, m, k) for n, (_, m, k) in kernel.links.items() if tunnel_of(n, k) is not None), None
    )
    protocol = tunnel_of(tunnel.name, tunnel.kind) if tunnel is not None else None
    nft = kernel.nft_table()
    facts = _probe_facts(doc)
    return NodeReport(
        agent=doc,
        routing_summary=routing_summary(doc.routing),
        masquerade_in_kernel=bool(nft and ("masquerade" in nft or "snat" in nft)),
        kernel_device_mtu=kernel.links[underlay][1] if underlay in kernel.links else None,
        tunnel_device=tunnel,
        # the tunnel protocol's programs and maps (an eBPF protocol's), empty otherwise
        bpf=protocol.stats(kernel.ipr) if protocol is not None else {},
        peers=tuple(
            _peer(p, kernel, routers, health_ns, facts, doc.path_mtu, doc.name) for p in doc.peers or ()
        ),
        kernel=kernel.owned_objects() if verbose else None,
    )


def _probe_facts(doc: StatusDocument) -> tuple[int, str]:
    """(the pods' route MTU, the tunnel's label as its spec writes it, e.g. ``<Protocol> (UDP
    <port>)``) from an agent's document, for its health probes."""
    route_mtu = doc.mtu.route if doc.mtu is not None else None
    return route_mtu or 0, tunnel_spec.label(doc.routing.tunnel_protocol, doc.routing.tunnel_port)


def _peer(
    p: PeerPlan,
    kernel: KernelReader,
    routers: dict[str, str],
    health_ns: str | None,
    facts: tuple[int, str] = (0, ""),
    agent_health: PathMtuStatus | None = None,
    own: str = "",
) -> PeerReport:
    target = p.router_ips[0] if p.router_ips else None
    if target is None and p.pod_cidrs:  # an agent from before routerIPs were listed
        target = str(ipaddress.ip_network(p.pod_cidrs[0]).network_address + 1)
    family = ipaddress.ip_address(target).version if target else 4
    node_ip = p.address(family)
    path = (
        kernel.path_to(target, node_ip, routers)
        if target
        else KernelPath("unreachable", None, None, "no pod CIDR")
    )
    health, detail = "unknown", ""
    if health_ns is not None and target is not None:
        found = []
        for ip in p.router_ips or (target,):
            fam = ipaddress.ip_address(ip).version
            peer_ip = (p.ipv4 if fam == 4 else p.ipv6) or node_ip
            fam_path = path if ip == target else kernel.path_to(ip, peer_ip, routers)
            found.append((fam, _health(health_ns, ip, peer_ip, fam_path, facts, p.name, own)))
        health, detail = combine_health(found)
    elif agent_health is not None:  # a real host: what the agent's own probes found
        health, detail = _agent_health(agent_health, p.name, node_ip, path, facts)
    return PeerReport(
        name=p.name,
        node_ip=node_ip,
        pod_cidrs=p.pod_cidrs,
        planned_reach=p.reach,
        why=p.why,
        kernel_reach=path.reach,
        path=path.text,
        agrees=_agrees(p.reach, path.reach),
        health=health,
        health_detail=detail,
        issues=p.issues,
    )


def _agent_health(
    probes: PathMtuStatus | Mapping[str, Any],
    name: str,
    node_ip: str | None,
    path: KernelPath,
    facts: tuple[int, str],
) -> tuple[str, str]:
    """The verdict from the agent's path-MTU prober (its ``pathMTU`` section, or that section's
    JSON): the peer's pod side (a small ping over the pod path), its underlay address (reachable)
    and a full-size DF probe of it."""
    if not isinstance(probes, PathMtuStatus):
        probes = PathMtuStatus.from_json(probes)
    pod = (probes.pod_side or {}).get(name)
    if pod is None:
        return "unknown", "the agent has not probed this peer yet"
    underlay = probes.of(name)
    full = all(r.ok for r in underlay) if underlay else None
    reachable = all(r.reachable for r in underlay) if underlay else None
    size, display = facts
    tunnel = (display or "the tunnel protocol") if path.reach == "tunnel" else ""
    return explain.peer_health(
        explain.PeerHealth(
            name,
            str(node_ip),
            path.reach,
            tunnel,
            pod.ok,
            reachable,
            full if pod.ok else None,
            size,
        )
    )


def combine_health(found: list[tuple[int, tuple[str, str]]]) -> tuple[str, str]:
    """One peer's health over its families (pure): the worst state; with several families the
    details name theirs (``IPv6: ...``) and say which family works."""
    rank = {"ok": 0, "unknown": 1, "degraded": 2, "unreachable": 3}
    worst = max((state for _, (state, _) in found), key=lambda s: rank.get(s, 1), default="unknown")
    if len(found) == 1:
        return found[0][1]
    bad = [f"IPv{fam}: {detail or state}" for fam, (state, detail) in found if state != "ok"]
    good = [f"IPv{fam}" for fam, (state, _) in found if state == "ok"]
    return worst, "; ".join(bad) + (f" ({', '.join(good)} ok)" if bad and good else "")


def _health(
    ns: str,
    target: str,
    node_ip: str | None,
    path: KernelPath,
    facts: tuple[int, str],
    name: str,
    own: str = "",
) -> tuple[str, str]:
    """Ping the peer's pod side; when it fails, its node address on the underlay; when it
    answers, a full-size DF packet of the route's MTU too: together they say what is wrong. The
    tunnel device's send errors around the first ping tell a drop on this node itself."""
    errors = _tx_errors(ns, path.dev) if path.reach == "tunnel" and path.dev else None
    pod_side = ping(ns, target, count=1, timeout=1.0).ok
    local = ""
    if errors is not None and not pod_side:
        after = _tx_errors(ns, str(path.dev))
        if after is not None and after > errors:  # confirmed: the device also counts a rise on its
            local = _own_drop(ns, str(path.dev), target)  # own now and then (IPv6 ND, MLD)
    underlay = full = None
    size, display = facts
    if not pod_side and node_ip:
        underlay = ping(ns, node_ip, count=1, timeout=1.0).ok
    if pod_side and size:
        headers = 28 if ipaddress.ip_address(target).version == 4 else 48
        full = ping(ns, target, count=1, timeout=1.0, size=size - headers, dont_fragment=True).ok
    tunnel = (display or "the tunnel protocol") if path.reach == "tunnel" else ""
    return explain.peer_health(
        explain.PeerHealth(name, str(node_ip), path.reach, tunnel, pod_side, underlay, full, size, local, own)
    )


CONFIRM = 3  # echoes that must all rise the tunnel device's send errors to blame the node itself


def _own_drop(ns: str, dev: str, target: str) -> str:
    """``"<dev> tx_errors +n"`` when ``CONFIRM`` more echoes each raise the device's send errors
    (an output filter drops every one), else "": a lone rise is the device's own background."""
    before = _tx_errors(ns, dev)
    ping(ns, target, count=CONFIRM, timeout=0.3)
    after = _tx_errors(ns, dev)
    if before is None or after is None or after - before < CONFIRM:
        return ""
    return f"{dev} tx_errors +{after - before}"


def _tx_errors(ns: str, dev: str | None) -> int | None:
    """A device's send errors in namespace ``ns`` (None when it cannot be read)."""
    try:
        with IPRoute(netns=ns) as ipr:
            links = ipr.link_lookup(ifname=dev)
            if not links:
                return None
            stats = ipr.get_links(links[0])[0].get_attr("IFLA_STATS64")
    except (OSError, NetlinkError):
        return None
    return int(stats["tx_errors"]) + int(stats["tx_dropped"]) if stats is not None else None


def _agrees(planned: str, kernel: str) -> bool:
    expected = {"tunnel": "tunnel", "direct-route": "direct-route", "underlay": "underlay-router"}
    return expected.get(planned) == kernel


def cluster_report(view: ClusterView, node: str | None, verbose: bool) -> ClusterReport:
    """``node``'s status (every node's without it), keyed by the name each agent reports.

    A real host has one node, whatever ``node`` says (as ``podnet status`` always had it)."""
    nodes = view.nodes
    if node and view.lab is not None:
        if node not in nodes:
            raise ViewError(f"{node} is not a node of lab {view.lab} (nodes: {', '.join(nodes)})")
        nodes = [node]
    routers = view.routers_by_address()
    reports: dict[str, NodeReport] = {}
    for n in nodes:
        doc = agent_document(view, n)
        reader = KernelReader(view.ipr(n), view.ns(n))
        reports[doc.name or n] = node_status(doc, reader, verbose, routers, health_ns=view.ns(n))
    return ClusterReport(view.lab, reports, view.supervised())


def cluster_status(view: ClusterView, node: str | None, verbose: bool) -> dict[str, Any]:
    """``podnet status -o json``: the JSON of ``cluster_report``."""
    return cluster_report(view, node, verbose).to_json()
