"""``podnet lab up``: build a topology out of network namespaces, idempotently.

Order: state first (write-ahead), then namespaces, segments (a bridge per segment namespace),
host links, addresses, sysctls, routes, and last the control plane's etcd. Each step is an
``ensure`` that counts what it changed, so a second ``lab up`` of the same file reports 0 changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from podnet.datapath.kernel.sysctl import ensure_sysctls
from podnet.lab import state as st
from podnet.lab import wire
from podnet.lab.topology import Host, Topology
from podnet.lab.underlay import plan_underlay_routes
from podnet.util import netns

Progress = Callable[[str], None]

ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv4.fib_multipath_hash_policy": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.fib_multipath_hash_policy": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
HOST_SYSCTLS = {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}


class LabError(RuntimeError):
    """A lab that cannot be built or found; the message says what to do."""


@dataclass
class BuildReport:
    lab: str
    changes: int = 0
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)


def fingerprint(topo: Topology) -> str:
    """A stable hash of what the topology builds (not of its file's formatting)."""
    blob = json.dumps(
        {
            "networks": [repr(n) for n in topo.networks],
            "hosts": [repr(h) for h in topo.hosts],
            "pods": [repr(p) for p in topo.pods],
            "cluster": topo.cluster,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _quiet(_: str) -> None:
    return None


class LabBuilder:
    """Builds one lab; ``up()`` can be called again on a running lab and then changes nothing."""

    def __init__(self, topo: Topology, progress: Progress = _quiet) -> None:
        self.topo = topo
        self.progress = progress
        self.sockets = wire.Sockets()
        self.report = BuildReport(topo.name)
        self.state = self._open_state()

    def _open_state(self) -> st.LabState:
        fp = fingerprint(self.topo)
        existing = st.LabState.load(self.topo.name)
        if existing is not None and existing.fingerprint and existing.fingerprint != fp:
            raise LabError(
                f"lab {self.topo.name} is already up from a different topology ({existing.source}); "
                f"run 'podnet lab down {self.topo.name}' first"
            )
        if existing is not None:
            return existing
        state = st.LabState(name=self.topo.name, fingerprint=fp, source=self.topo.source)
        state.info["topology"] = self.topo.source
        state.info["hosts"] = [h.name for h in self.topo.hosts] + [f"sw-{n.name}" for n in self.topo.networks]
        state.info["pods"] = [p.name for p in self.topo.pods]
        state.save()
        return state

    def ns(self, host: str) -> str:
        return st.ns_name(self.topo.name, host)

    def _step(self, label: str) -> None:
        self.report.steps.append(label)
        self.progress(label)

    def _count(self, changed: bool) -> None:
        if changed:
            self.report.changes += 1

    def up(self) -> BuildReport:
        start = time.monotonic()
        try:
            self.state.status = "building"
            self.state.save()
            self._step("namespaces")
            self.make_namespaces()
            self._step("segments")
            self.make_segments()
            self._step("links and addresses")
            for host in self.topo.hosts:
                self.create_links(host)
            for host in self.topo.hosts:
                self.address_links(host)
            self._step("forwarding and routes")
            self.configure_routing()
            self.state.status = "up"
            self.state.save()
        except BaseException:
            self.state.status = "failed"
            self.state.save()
            raise
        finally:
            self.sockets.close()
        self.report.seconds = time.monotonic() - start
        return self.report

    def make_namespaces(self) -> None:
        wanted = [st.segment_ns(self.topo.name, n.name) for n in self.topo.networks if not n.vpc]
        wanted += [self.ns(h.name) for h in self.topo.hosts]
        self._check_namespaces_free(wanted + [self.ns(p.name) for p in self.topo.pods])  # pods: later
        for name in wanted:
            self.state.namespaces.append(name) if name not in self.state.namespaces else None
        self.state.save()
        for name in wanted:
            self._count(netns.create(name))

    def _check_namespaces_free(self, wanted: list[str]) -> None:
        """Refuse (before anything is made) a namespace that exists but is not this lab's:
        ``pn-two-subnets-node1`` is both lab ``two``'s host ``subnets-node1`` and lab
        ``two-subnets``'s ``node1``."""
        for name in wanted:
            if name in self.state.namespaces or not netns.exists(name):
                continue
            owner = _owner_of(name, self.topo.name)
            raise LabError(
                f"namespace {name} already exists (lab {owner}?): pick another lab name "
                f"or podnet lab down {owner}"
            )

    def make_segments(self) -> None:
        for net in self.topo.networks:
            if net.vpc:
                continue  # the lab's EC2 links each instance to the VPC router (lab.vpc)
            ipr = self.sockets(st.segment_ns(self.topo.name, net.name))
            self._count(wire.ensure_bridge(ipr, "br0", net.mtu))

    def create_links(self, host: Host) -> None:
        """Pass 1: every veth (segment ports and router links) exists, ends in their namespaces."""
        ipr = self.sockets(self.ns(host.name))
        for iface in host.interfaces:
            if self.topo.on_vpc(iface):
                continue
            if iface.network is not None:
                seg = st.segment_ns(self.topo.name, iface.network)
                self._count(wire.ensure_veth(ipr, iface.name, seg, host.name, iface.mtu))
                self._count(wire.ensure_up(self.sockets(seg), host.name, iface.mtu, master="br0"))
                self._count(wire.ensure_wire_sizes(seg, host.name))
            elif iface.peer is not None and host.name < iface.peer:
                self._count(
                    wire.ensure_veth(ipr, iface.name, self.ns(iface.peer), f"to-{host.name}", iface.mtu)
                )

    def address_links(self, host: Host) -> None:
        """Pass 2: each host's ends up, with their MTU and addresses."""
        ipr = self.sockets(self.ns(host.name))
        for iface in host.interfaces:
            if self.topo.on_vpc(iface):
                continue
            # no DAD on lab links: a link-local address tentative for a second after `lab up`
            # would hold the first IPv6 packets (neighbour solicitations need it as source)
            self._count(_ensure_sysctls(self.ns(host.name), {f"net.ipv6.conf.{iface.name}.accept_dad": "0"}))
            self._count(wire.ensure_up(ipr, iface.name, iface.mtu))
            if host.role == "router":  # routers are the wire too (a node's own links are its NICs)
                self._count(wire.ensure_wire_sizes(self.ns(host.name), iface.name))
            for address in (iface.address, iface.ipv6):
                if address is not None:
                    self._count(wire.ensure_address(ipr, iface.name, address))

    def configure_routing(self) -> None:
        for host in self.topo.hosts:
            sysctls = ROUTER_SYSCTLS if host.role == "router" else HOST_SYSCTLS
            self._count(_ensure_sysctls(self.ns(host.name), sysctls))
            for gateway in (host.gateway, host.gateway6):
                if gateway is not None and not self.topo.on_vpc(host.primary):
                    self._count(wire.ensure_route(self.sockets(self.ns(host.name)), None, [gateway]))
        for route in plan_underlay_routes(self.topo):
            self._count(wire.ensure_route(self.sockets(self.ns(route.router)), route.dst, route.via))


def _owner_of(ns: str, lab: str) -> str:
    """The other lab whose state lists ``ns``; else ``lab`` itself (a run of it that lost its state)."""
    for other in st.known_labs():
        state = st.LabState.load(other)
        if other != lab and state is not None and ns in state.namespaces:
            return other
    return lab


def _ensure_sysctls(ns: str, wanted: dict[str, str]) -> bool:
    return bool(ensure_sysctls(wanted, netns=ns))
