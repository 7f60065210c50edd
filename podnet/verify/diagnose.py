"""``podnet diagnose SRC DST``: walk a packet's path hop by hop with each namespace's own answer.

In every namespace on the way the walk asks the kernel (``ip route get``; for the tunnel device
the neighbour and FDB entries; for on-link next hops the neighbour state), moves to the host that
owns the next hop, checks that a full-size packet fits every device on the link (both ends and the
segment's bridge ports), and at a tunnel device continues with the outer packet until the remote
node decapsulates it. The reply path is walked too. The first drop is explained in
``podnet.verify.explain``; the kernel is only read, never changed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel.route import route_from_msg
from podnet.datapath.tunnels import TunnelProtocol, tunnel_of, tunnel_protocol
from podnet.model import IPAddress, IPNetwork
from podnet.specs import tunnel as tunnel_spec
from podnet.statusdoc.routing import RoutingStatus
from podnet.util import netns
from podnet.verify import explain
from podnet.verify.controlplane import BIRD_START, ControlPlane
from podnet.verify.explain import Drop
from podnet.verify.follow import ProbeRun
from podnet.verify.probeverdict import ProbeVerdicts
from podnet.verify.view import PathView, Place, ViewError, agent_document

MAX_HOPS = 24
NUD_NAMES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}
RTN_LOCAL = 2
RTPROT_NAMES = {2: "kernel", 3: "boot", 4: "static", 12: "bird", 186: "bgp", owned.ROUTE_PROTOCOL: "podnet"}
HAND_MADE = ("kernel", "boot", "static", "")  # route protocols not worth naming in a verdict


@dataclass(frozen=True)
class Hop:
    """One step: the host, what its kernel answered, and what happens to the packet there."""

    host: str
    action: str  # forward | encap | decap | deliver | drop
    kernel: str
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "action": self.action, "kernel": self.kernel, "size": self.size}


@dataclass(frozen=True)
class PathWalk:
    hops: tuple[Hop, ...]
    drop: Drop | None

    @property
    def ok(self) -> bool:
        return self.drop is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "hops": [h.to_json() for h in self.hops],
            "drop": self.drop.to_json() if self.drop else None,
        }


@dataclass(frozen=True)
class Diagnosis:
    """The walk's verdict from the tables and, when probes were followed, theirs: a path "works"
    only when its probes came back; a table drop stands first; a lost probe nothing explains
    makes an "inconclusive" verdict, never "works"."""

    src: Place
    dst: Place
    size: int
    forward: PathWalk
    reply: PathWalk | None
    probe: ProbeRun | None = None
    probe_drop: Drop | None = None
    probe_note: str = ""  # why no probe was followed
    warnings: tuple[str, ...] = ()  # the control plane's state: a store or BGP session down

    @property
    def drop(self) -> Drop | None:
        walk = self.forward.drop or (self.reply.drop if self.reply is not None else None)
        if walk is not None and walk.kind == "mtu" and self.probe is not None and all(self.probe.answered):
            return Drop(
                walk.host,
                "fragmented",
                f"{walk.reason}; yet the full-size probe came back: the tunnel's outer packets are "
                "fragmented there (they do not carry DF), which works but costs throughput",
                walk.fix,
            )
        return walk or self.probe_drop

    @property
    def ok(self) -> bool:
        return self.drop is None

    @property
    def status(self) -> str:
        """works | broken | degraded (fragmented) | inconclusive | unverified (the tables look right,
        no probe was followed)."""
        if self.drop is not None:
            return {"inconclusive": "inconclusive", "fragmented": "degraded"}.get(self.drop.kind, "broken")
        return "works" if self.probe is not None else "unverified"

    def to_json(self) -> dict[str, Any]:
        return {
            "src": {"host": self.src.host, "ip": str(self.src.ip), "kind": self.src.kind},
            "dst": {"host": self.dst.host, "ip": str(self.dst.ip), "kind": self.dst.kind},
            "size": self.size,
            "ok": self.ok,
            "status": self.status,
            "verdict": self.drop.to_json() if self.drop else None,
            "forward": self.forward.to_json(),
            "reply": self.reply.to_json() if self.reply else None,
            "probe": self.probe.to_json() if self.probe else None,
            "probeNote": self.probe_note,
            "warnings": list(self.warnings),
        }


def families_json(diags: list[Diagnosis]) -> dict[str, Any]:
    """One answer for a pair asked in several families (pure): the document of the family that
    fails (else the first), its verdict saying which family it is about and how the others fared,
    and every family's own document under ``families``. One family: its document as it is."""
    if len(diags) == 1:
        return diags[0].to_json()
    lead = next((d for d in diags if d.drop is not None), None) or next(
        (d for d in diags if d.status != "works"), diags[0]
    )
    doc = lead.to_json()
    others = ", ".join(f"IPv{d.dst.ip.version} {d.status}" for d in diags if d is not lead)
    if doc["verdict"] is not None:
        verdict = dict(doc["verdict"])
        verdict["reason"] = f"over IPv{lead.dst.ip.version} ({others}): {verdict['reason']}"
        doc["verdict"] = verdict
    doc["ok"] = all(d.ok for d in diags)
    doc["families"] = [{"family": d.dst.ip.version, "status": d.status, **d.to_json()} for d in diags]
    return doc


@dataclass
class _Walk:
    """Mutable state of one direction's walk."""

    host: str
    src: IPAddress
    dst: IPAddress
    size: int
    inner: list[tuple[IPAddress, IPAddress, int]] = field(default_factory=list)
    tunnels: list[TunnelProtocol] = field(default_factory=list)  # one per level of ``inner``
    hops: list[Hop] = field(default_factory=list)
    mtu_drop: Drop | None = None
    iif: str = ""  # the device it came in on; "" where it starts (nothing to forward there)


class Diagnoser:
    """Walks paths in one lab; reuse one instance for several diagnoses (it caches kernel reads)."""

    def __init__(self, view: PathView) -> None:
        self.view = view
        self._pod_cidrs: dict[IPNetwork, str] | None = None
        self.control = ControlPlane(view)
        self.probes = ProbeVerdicts(view, self._tunnel_label)

    # ---- cluster facts -------------------------------------------------------------------------

    def pod_cidrs(self) -> dict[IPNetwork, str]:
        """``{pod CIDR: node}`` from the agents' status documents."""
        if self._pod_cidrs is None:
            found: dict[IPNetwork, str] = {}
            for node in self.view.nodes:
                identity = agent_document(self.view, node).node
                for c in identity.pod_cidrs if identity is not None else ():
                    found[ipaddress.ip_network(c)] = node
            self._pod_cidrs = found
        return self._pod_cidrs

    def pod_cidr_of(self, ip: IPAddress) -> IPNetwork | None:
        return next((c for c in self.pod_cidrs() if ip in c), None)

    def routing_mode(self) -> str:
        for node in self.view.nodes:
            mode = agent_document(self.view, node).routing.mode
            if mode:
                return mode
        return str(self.view.cluster_setting("routingMode", ""))

    def full_size(self, host: str, dst: IPAddress) -> int:
        """The largest packet ``host`` sends to ``dst``: its route MTU, else the device MTU."""
        route, _ = self._route_get(host, dst)
        if route is None:
            return 1500
        dev = self.view.links(host).get(route.dev)
        return min(x for x in (route.mtu, dev.mtu if dev else None, 65535) if x)

    # ---- the walk ------------------------------------------------------------------------------

    def diagnose(self, src: Place, dst: Place, size: int | None = None, probe: bool = True) -> Diagnosis:
        """Walk both ways through the tables, then (``probe``) follow real probes along the path."""
        size = size or self.full_size(src.host, dst.ip)
        forward = self.walk(src.host, src.ip, dst.ip, size, reply_ctx=None)
        reply = None
        if forward.ok and dst.host in self.view.hosts():
            reply = self.walk(dst.host, dst.ip, src.ip, size, reply_ctx=(src, dst))
        warnings = tuple(self.control.warnings())
        if not probe:
            note = "no probe followed (--no-probe)"
            return Diagnosis(src, dst, size, forward, reply, probe_note=note, warnings=warnings)
        if src.host not in self.view.hosts():
            note = f"no probe followed: {src.describe()} is not a lab host it can be sent from"
            return Diagnosis(src, dst, size, forward, reply, probe_note=note, warnings=warnings)
        hops_back = [h.host for h in reply.hops] if reply is not None else None
        run, drop = self.probes.follow(src, dst, size, [h.host for h in forward.hops], hops_back)
        return Diagnosis(src, dst, size, forward, reply, run, drop, warnings=warnings)

    def _tunnel_label(self) -> str:
        protocol = self._tunnel_protocol()
        return str(protocol.spec.label(self._tunnel_port(protocol)))

    def _routing(self) -> RoutingStatus | None:
        """The routing section of the first agent that states its tunnel (what the nodes run now)."""
        for node in self.view.nodes:
            routing = agent_document(self.view, node).routing
            if routing.tunnel_protocol:
                return routing
        return None

    def _tunnel_protocol(self) -> TunnelProtocol:
        routing = self._routing()
        name = (
            (routing.tunnel_protocol if routing is not None else None)
            or self.view.cluster_setting("tunnelProtocol")
            or tunnel_spec.default_name()
        )
        return tunnel_protocol(str(name))

    def _tunnel_port(self, protocol: TunnelProtocol) -> int:
        routing = self._routing()
        return (routing.tunnel_port if routing is not None else None) or protocol.default_port

    def walk(
        self,
        host: str,
        src: IPAddress,
        dst: IPAddress,
        size: int,
        reply_ctx: tuple[Place, Place] | None,
    ) -> PathWalk:
        w = _Walk(host, src, dst, size)
        seen: set[tuple[str, IPAddress]] = set()
        for _ in range(MAX_HOPS):
            if (w.host, w.dst) in seen:
                return PathWalk(tuple(w.hops), Drop(w.host, "loop", f"routing loop at {w.host}", ""))
            seen.add((w.host, w.dst))
            drop, done = self._step(w, reply_ctx)
            if drop is not None:
                w.hops.append(Hop(w.host, "drop", drop.reason, w.size))
                return PathWalk(tuple(w.hops), drop)
            if done:
                return PathWalk(tuple(w.hops), w.mtu_drop)
        return PathWalk(tuple(w.hops), Drop(w.host, "loop", f"more than {MAX_HOPS} hops", ""))

    def _step(self, w: _Walk, reply_ctx: tuple[Place, Place] | None) -> tuple[Drop | None, bool]:
        owner = self.view.owner(w.dst)
        if owner is not None and owner[0] == w.host:
            if not w.inner:
                w.hops.append(Hop(w.host, "deliver", f"{w.dst} is local on {owner[1]}", w.size))
                return None, True
            protocol = w.tunnels[-1]
            tunnel = next(
                (link for link in self.view.links(w.host).values() if link.name == protocol.device), None
            )
            if tunnel is None:
                return Drop(
                    w.host,
                    "no-tunnel-device",
                    f"{w.host} receives {protocol.display} but has no {protocol.display} device",
                    f"is the agent on {w.host} running in tunnel mode?",
                ), False
            w.tunnels.pop()
            w.dst, w.src, w.size = w.inner.pop()
            w.iif = tunnel.name
            program = self._program(w.host, protocol, "ingress")
            if program:
                w.hops.append(Hop(w.host, "decap", f"{program} decapsulates {w.src} -> {w.dst}", w.size))
                return None, False
            w.hops.append(Hop(w.host, "decap", f"{tunnel.name} decapsulates {w.src} -> {w.dst}", w.size))
            return None, False
        route, error = self._route_get(w.host, w.dst)
        if route is None:
            special = self._special_route(w.host, w.dst) if error else None
            return special or self._no_route(w, error, reply_ctx), False
        if w.iif:
            off = self._forwarding_off(w.host, w.dst.version, w.iif)
            if off is not None:
                return off, False
        text = f"ip route get {w.dst}: {_describe(route)}" + self._host_routing_note(w)
        dev = self.view.links(w.host).get(route.dev)
        protocol = tunnel_of(dev.name, dev.kind) if dev is not None else None
        if dev is not None and protocol is not None:
            return self._encap(w, route, dev.name, protocol, text), False
        nexthop = route.gateway or w.dst
        nh_owner = self.view.owner(nexthop)
        if nh_owner is None:
            state = self._neigh_state(w.host, route.dev, nexthop)
            return explain.no_neighbour(w.host, nexthop, route.dev, state), False
        wrong = self._wrong_way(w, route, nexthop, nh_owner)
        if wrong is not None:
            return wrong, False
        if w.mtu_drop is None:
            w.mtu_drop = self._check_mtu(w, route.dev, route.mtu, nh_owner)
        w.hops.append(Hop(w.host, "forward", text + self._nft_note(w.host), w.size))
        w.host, w.iif = nh_owner
        return None, False

    # ---- what the route lookup alone does not show -----------------------------------------------

    def _special_route(self, host: str, dst: IPAddress) -> Drop | None:
        """The blackhole, unreachable or prohibit route that made ``ip route get`` fail: the most
        specific one holding ``dst`` in the main table."""
        best: tuple[int, Any] | None = None
        family = 2 if dst.version == 4 else 10
        for msg in self.view.ipr(host).get_routes(family=family, table=254):
            if msg["type"] not in explain.ROUTE_TYPES:
                continue
            prefix = msg.get_attr("RTA_DST") or ("0.0.0.0" if dst.version == 4 else "::")
            net = ipaddress.ip_network(f"{prefix}/{msg['dst_len']}", strict=False)
            if dst in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, msg)
        if best is None:
            return None
        msg = best[1]
        kind = explain.ROUTE_TYPES[msg["type"]]
        prefix = msg.get_attr("RTA_DST") or "default"
        route = f"{kind} {prefix}" + (f"/{msg['dst_len']}" if prefix != "default" else "")
        proto = RTPROT_NAMES.get(msg["proto"], str(msg["proto"]))
        shown = "" if proto in HAND_MADE else proto
        return explain.special_route(host, self.view.role(host), self.view.ns(host), dst, kind, route, shown)

    def _forwarding_off(self, host: str, family: int, iif: str) -> Drop | None:
        """Forwarding switched off where the packet has to be passed on (it came in on ``iif``)."""
        keys = (
            [("net.ipv4.ip_forward", "net/ipv4/ip_forward"), (f"net.ipv4.conf.{iif}.forwarding",
             f"net/ipv4/conf/{iif}/forwarding")]
            if family == 4
            else [("net.ipv6.conf.all.forwarding", "net/ipv6/conf/all/forwarding")]
        )  # fmt: skip
        for key, path in keys:
            if _sysctl(self.view.ns(host), path) == "0":
                role = self.view.role(host)
                return explain.forwarding_off(host, role, self.view.ns(host), family, iif, key)
        return None

    def _wrong_way(self, w: _Walk, route: Any, nexthop: IPAddress, nh: tuple[str, str]) -> Drop | None:
        """The route's device does not lead to the host that holds the next hop (a route someone
        added by hand), or the neighbour entry for the next hop names a MAC that host does not have."""
        ns, role = self.view.ns(w.host), self.view.role(w.host)
        if self._leads_to(w.host, route.dev, nh[0]) is False:
            text, proto = self._route_text(w.host, w.dst)
            shown = "" if proto in HAND_MADE else proto
            return explain.misroute(w.host, role, ns, w.dst, text or f"{w.dst} dev {route.dev}", route.dev,
                                    nh[0], shown)  # fmt: skip
        mac, state = self._neigh(w.host, route.dev, nexthop)
        if mac is None or not {"PERMANENT", "NOARP", "REACHABLE"} & set(state.split("|")):
            return None  # a STALE entry is confirmed again before long: not a cause
        theirs = {link.mac for link in self.view.links(nh[0]).values() if link.mac}
        if not theirs or mac in theirs:
            return None
        holder = next(
            (h for h in self.view.hosts() for link in self.view.links(h).values() if link.mac == mac), ""
        )
        owner_mac = next((link.mac for link in self.view.links(nh[0]).values() if link.name == nh[1]), "")
        return explain.wrong_neighbour(
            w.host, role, ns, nexthop, route.dev, mac, state, nh[0], f"{nh[1]} {owner_mac}".strip(), holder
        )

    def _leads_to(self, host: str, dev: str, other: str) -> bool | None:
        """Whether ``host``'s ``dev`` reaches ``other``: both on one underlay segment, or the two ends
        of one veth; None when the lab's wiring does not say."""
        if other == host:
            return True
        port = self.view.underlay_port(host, dev)
        if port is not None and port.segment is not None:
            theirs = [self.view.underlay_port(other, name) for name in self.view.links(other)]
            return any(p is not None and p.segment == port.segment for p in theirs)
        link = self.view.links(host).get(dev)
        if link is None or link.kind != "veth" or link.peer_index is None:
            return None
        return any(
            peer.kind == "veth" and peer.index == link.peer_index and peer.peer_index == link.index
            for peer in self.view.links(other).values()
        )

    def _route_text(self, host: str, dst: IPAddress) -> tuple[str, str]:
        """The main table's most specific route to ``dst`` as ``ip route`` prints it (for the fix's
        command), and its protocol's name (the lookup's answer does not carry it)."""
        family = 2 if dst.version == 4 else 10
        best: tuple[int, str, str] | None = None
        names = {link.index: link.name for link in self.view.links(host).values()}
        for msg in self.view.ipr(host).get_routes(family=family, table=254):
            prefix = msg.get_attr("RTA_DST")
            if prefix is None or msg["type"] != 1:
                continue
            net = ipaddress.ip_network(f"{prefix}/{msg['dst_len']}", strict=False)
            if dst not in net or (best is not None and net.prefixlen <= best[0]):
                continue
            gateway = msg.get_attr("RTA_GATEWAY")
            dev = names.get(msg.get_attr("RTA_OIF") or 0, "")
            metric = msg.get_attr("RTA_PRIORITY")
            text = f"{net}" + (f" via {gateway}" if gateway else "") + (f" dev {dev}" if dev else "")
            proto = RTPROT_NAMES.get(msg["proto"], str(msg["proto"]))
            best = (net.prefixlen, text + (f" metric {metric}" if metric else ""), proto)
        return (best[1], best[2]) if best else ("", "")

    def _encap(self, w: _Walk, route: Any, dev: str, protocol: TunnelProtocol, text: str) -> Drop | None:
        nexthop = route.gateway or w.dst
        w.iif = ""  # the outer packet starts here
        mac, state = self._neigh(w.host, dev, nexthop)
        if mac is None:
            return explain.no_neighbour(w.host, nexthop, dev, state)
        remote = self._fdb_dst(w.host, dev, mac, protocol)
        if remote is None:
            return explain.no_fdb(w.host, mac, dev, protocol.display, protocol.peer_entry)
        if route.mtu and w.size > route.mtu and w.mtu_drop is None:
            w.mtu_drop = explain.mtu_drop(
                explain.MtuContext(w.host, f"the route via {dev}", route.mtu, w.size, w.size, 0)
            )
        local = self._tunnel_local(w.host, dev, protocol) or self._node_ip(w.host, remote.version) or w.src
        w.inner.append((w.dst, w.src, w.size))
        w.tunnels.append(protocol)
        program = self._program(w.host, protocol, "egress")
        w.hops.append(
            Hop(
                w.host,
                "encap",
                f"{text}; neigh {nexthop} lladdr {mac} {state}; "
                f"{'peer map' if program else 'fdb'} {mac} dst {remote}: "
                f"{protocol.display} {local} -> {remote}"
                + (f" ({program}, redirected to the underlay device)" if program else ""),
                w.size,
            )
        )
        w.dst, w.src, w.size = remote, local, w.size + protocol.overhead(remote.version)
        return None

    def _no_route(self, w: _Walk, error: str, reply_ctx: tuple[Place, Place] | None) -> Drop:
        cidr = self.pod_cidr_of(w.dst)
        from_outside = bool(
            reply_ctx is not None and reply_ctx[0].kind == "pod" and self.pod_cidr_of(reply_ctx[1].ip) is None
        )
        src_node = ""
        if from_outside and reply_ctx is not None:
            src_node = str(self.view.pods.get(reply_ctx[0].host, {}).get("node", ""))
        ctx = explain.RouteContext(
            host=w.host,
            role=self.view.role(w.host),
            dst=w.dst,
            pod_cidr=cidr,
            routing_mode=self.routing_mode(),
            reply_to_pod_from_outside=from_outside,
            src_node=src_node,
            masquerade_active=bool(src_node) and masquerade_active(self.view, src_node),
            kernel_error=error,
        )
        if cidr is not None and not from_outside:
            cause, fix = self._route_cause(cidr)
            ctx = dataclasses.replace(ctx, cause=cause, cause_fix=fix)
        return explain.no_route(ctx)

    def _route_cause(self, cidr: IPNetwork) -> tuple[str, str]:
        """Why nobody routes ``cidr``, from what the agents report: a node that refused the direct
        route (autoDirectNodeRoutes with the peer behind a gateway), a BGP session not established."""
        owner = self.pod_cidrs().get(cidr, "")
        for router, detail in self.control.birds_down():
            return explain.bird_down(router, detail, BIRD_START)
        for node in self.view.nodes:
            for peer in agent_document(self.view, node).peers or ():
                issues = " ".join(peer.issues)
                if peer.name == owner and "gateway" in issues:
                    return (
                        f"autoDirectNodeRoutes assumes {owner} shares an L2 segment with {node}, but it does "
                        f"not (agent on {node}: {issues})",
                        "autoDirectNodeRoutes needs every node on one L2 segment: use routingMode=tunnel, "
                        "tunnelFallback (a tunnel only where needed), or BGP (bgp.enabled)",
                    )
        down = self.control.router_sessions_down()
        for node in self.view.nodes:
            for peer in agent_document(self.view, node).bgp.down():
                down.append(f"{node} -> {peer.peer_address} (AS{peer.peer_asn}) is {peer.state}")
        if down:
            return (
                f"BGP session {'; '.join(down)}, so the routers do not learn every pod CIDR",
                "bring the session up: `podnet bgp peers` shows its state on both sides; check the peer "
                "address, ASNs and that TCP 179 passes",
            )
        return "", ""

    # ---- MTU -----------------------------------------------------------------------------------

    def _check_mtu(self, w: _Walk, dev: str, route_mtu: int | None, nh: tuple[str, str]) -> Drop | None:
        """The first device on the link ``w.host dev -> nh`` that is smaller than the packet."""
        inner = w.inner[0][2] if w.inner else w.size
        overhead = w.size - inner
        for where, mtu, command in self._link_devices(w.host, dev, route_mtu, nh):
            if w.size > mtu:
                return explain.mtu_drop(
                    explain.MtuContext(w.host, where, mtu, w.size, inner, overhead, command)
                )
        return None

    def _link_devices(
        self, host: str, dev: str, route_mtu: int | None, nh: tuple[str, str]
    ) -> list[tuple[str, int, str]]:
        """(description, MTU, fix command) of each device a packet crosses from ``host dev`` to ``nh``."""
        out: list[tuple[str, int, str]] = []
        if route_mtu:
            out.append((f"the route on {host} via {dev}", route_mtu, ""))
        link = self.view.links(host).get(dev)
        if link is not None:
            out.append(
                (f"{host} dev {dev}", link.mtu, f"ip -n {self.view.ns(host)} link set {dev} mtu {{mtu}}")
            )
        underlay = self.view.underlay_port(host, dev)
        if underlay is not None and underlay.segment is not None:
            network = underlay.segment
            seg = self.view.segment_host(network)
            ports = self.view.links(seg) if seg in self.view.hosts() else {}
            for name in (host, nh[0]):
                port = ports.get(name)
                if port is not None:
                    out.append(
                        (
                            f"segment {network} port {name}",
                            port.mtu,
                            f"ip -n {self.view.ns(seg)} link set {name} mtu {{mtu}}",
                        )
                    )
        far = self.view.links(nh[0]).get(nh[1])
        if far is not None and self.view.underlay_port(nh[0], nh[1]) is not None:
            out.append(
                (f"{nh[0]} dev {nh[1]}", far.mtu, f"ip -n {self.view.ns(nh[0])} link set {nh[1]} mtu {{mtu}}")
            )
        return out

    # ---- kernel reads --------------------------------------------------------------------------

    def _route_get(self, host: str, dst: IPAddress) -> tuple[Any, str]:
        ipr = self.view.ipr(host)
        try:
            msg = ipr.route("get", dst=str(dst), family=2 if dst.version == 4 else 10)[0]
        except NetlinkError as e:
            return None, e.args[1] if len(e.args) > 1 else str(e)
        if msg["type"] != 1 and msg["type"] != RTN_LOCAL:
            return None, f"route type {msg['type']}"
        names = {link.index: link.name for link in self.view.links(host).values()}
        return route_from_msg(msg, lambda i: names.get(i, f"if{i}")), ""

    def _neigh(self, host: str, dev: str, ip: IPAddress) -> tuple[str | None, str]:
        link = self.view.links(host).get(dev)
        if link is None:
            return None, ""
        for msg in self.view.ipr(host).get_neighbours(ifindex=link.index):
            if msg.get_attr("NDA_DST") == str(ip):
                state = _nud(msg["state"])
                mac = msg.get_attr("NDA_LLADDR")
                ok = msg["state"] & (0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80)
                return (str(mac).lower() if mac and ok else None), state
        return None, ""

    def _neigh_state(self, host: str, dev: str, ip: IPAddress) -> str:
        return self._neigh(host, dev, ip)[1]

    def _fdb_dst(self, host: str, dev: str, mac: str, protocol: TunnelProtocol) -> IPAddress | None:
        """The peer entry for ``mac``, wherever the protocol keeps it (a device's FDB, a BPF map)."""
        link = self.view.links(host)[dev]
        entries = protocol.dump_peers(self.view.ipr(host), link.index, dev)
        return next((e.dst for e in entries if e.lladdr.lower() == mac), None)

    def _host_routing_note(self, w: _Walk) -> str:
        """With BPF host routing, a pod's packet to a cluster pod leaves its node by the program
        on the pod's veth (the route below is the one its fib lookup finds)."""
        if w.inner or self.view.role(w.host) != "node":
            return ""
        owner = self.view.owner(w.src)
        pod = self.view.pods.get(owner[0]) if owner is not None else None
        if pod is None or pod.get("node") != w.host or self.pod_cidr_of(w.dst) is None:
            return ""
        status = agent_document(self.view, w.host).host_routing
        program = status.program
        if not status.bpf or program is None:
            return ""
        dst_owner = self.view.owner(w.dst)
        dst_pod = self.view.pods.get(dst_owner[0]) if dst_owner is not None else None
        local = dst_pod is not None and dst_pod.get("node") == w.host
        how = "redirect_peer into the pod" if local else "fib lookup + redirect"
        name = f"{program.object} (prog id {program.id})"
        return f" [BPF host routing: {name} on the pod's veth: {how}]"

    def _program(self, host: str, protocol: TunnelProtocol, hook: str) -> str:
        """``<source>-encap-... (prog id 7) on <device> egress`` when a program does that hop."""
        found = [p for p in protocol.stats(self.view.ipr(host)).get("programs", []) if p["hook"] == hook]
        return "; ".join(
            f"{p['object'].split(':')[0]} (prog id {p['id']}) on {p['dev']} {hook}" for p in found
        )

    def _node_ip(self, host: str, family: int) -> IPAddress | None:
        try:
            return self.view.node_ip(host, family)
        except ViewError:
            return None

    def _tunnel_local(self, host: str, dev: str, protocol: TunnelProtocol) -> IPAddress | None:
        msg = self.view.ipr(host).get_links(self.view.links(host)[dev].index)[0]
        return protocol.device_local(msg)

    def _nft_note(self, host: str) -> str:
        drops = nft_drop_rules(self.view.ns(host))
        return f"; nft drop rules: {'; '.join(drops)}" if drops else ""


def _describe(route: Any) -> str:
    parts = []
    if route.gateway is not None:
        parts.append(f"via {route.gateway}")
    parts.append(f"dev {route.dev}")
    if route.src is not None:
        parts.append(f"src {route.src}")
    if route.mtu:
        parts.append(f"mtu {route.mtu}")
    return " ".join(parts)


def _sysctl(ns: str, path: str) -> str:
    """A sysctl's value inside namespace ``ns`` (``net/ipv4/ip_forward``); "" when it does not exist."""
    try:
        with netns.entered(ns), open(f"/proc/sys/{path}") as f:
            return f.read().strip()
    except OSError:
        return ""


def _nud(state: int) -> str:
    return "|".join(name for bit, name in NUD_NAMES.items() if state & bit) or "NONE"


def nft_drop_rules(ns: str) -> list[str]:
    """Rules with a drop verdict in namespace ``ns`` (``nft -j list ruleset``), with their counters.
    podnet's own pod guard (``owned.GUARD_TABLE``) is left out: its drops are pod policy, shown
    by ``podnet status``, not a filter in the path of node-to-node traffic."""
    try:
        res = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        items = json.loads(res.stdout or "{}").get("nftables", [])
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    found = []
    for item in items:
        rule = item.get("rule")
        if not rule or not any("drop" in e for e in rule.get("expr", []) if isinstance(e, dict)):
            continue
        if rule.get("table") == owned.GUARD_TABLE:
            continue
        counters = [e["counter"] for e in rule["expr"] if isinstance(e, dict) and "counter" in e]
        packets = next((c.get("packets") for c in counters if isinstance(c, dict)), None)
        count = f" ({packets} packets)" if packets is not None else ""
        found.append(
            f"table {rule.get('table')} chain {rule.get('chain')} handle {rule.get('handle')}{count}"
        )
    return found


def masquerade_active(view: PathView, node: str) -> bool:
    """Whether the node has podnet's nft table with a masquerade rule (read from the kernel)."""
    try:
        res = subprocess.run(
            ["ip", "netns", "exec", view.ns(node), "nft", "list", "table", "ip", "podnet"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and ("masquerade" in res.stdout or "snat" in res.stdout)
