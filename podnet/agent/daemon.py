"""The podnet agent: one per node. Register, get pod CIDRs, set up devices, then plan and apply.

Restart-safe by construction (Calico Felix's rule): no route, neighbour or FDB entry towards
peers is changed until the node watch has synced the whole node set (start-up only ensures the
node's own devices, keeping an existing tunnel device), endpoint allocations are restored from the records
the CNI handler keeps, and the reconciler only ever touches what carries podnet's marks. A node
that vanishes from etcd keeps its routes for ``NODE_GONE_GRACE`` seconds, so an agent restart
elsewhere does not cut its pods off (its lease may lapse). On the Kubernetes datastore a node
vanishes only when its Node object is deleted, so its routes go at once.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from podnet.agent import components as comp
from podnet.agent import reconfig, wiring
from podnet.agent.api import ApiServer, serve
from podnet.agent.bgp_speaker import Bgp
from podnet.agent.cni_handler import CniHandler
from podnet.agent.drops import DropMonitor
from podnet.agent.pmtu_prober import PathMtuProber
from podnet.agent.pod_guard import EndpointHooks, Guard
from podnet.agent.policy import PolicyEnforcer
from podnet.agent.reaper import EndpointReaper
from podnet.agent.reports import NodeReport
from podnet.agent.round import node_labels, plan_round
from podnet.agent.startup import (
    STORE_CONNECT_TIMEOUT,
    AgentError,
    agent_identity,
    cidr_change,
    hold_node_lock,
    mode_route_mtu,
)
from podnet.agent.status import AgentStatus, status_document
from podnet.agent.underlay import Underlay, detect_underlay, pool_conflicts
from podnet.cni import answer
from podnet.config import AgentConfig, ConfigError, load_config_file
from podnet.datapath.kernel.link import link_index, link_mtu
from podnet.datapath.kernel.route import route_get
from podnet.datapath.kernel.sysctl import refuse_initial_netns
from podnet.datapath.modes import mode_for
from podnet.datapath.modes.base import LocalNode, PeerPath
from podnet.datapath.nodesetup import add_router_ips, setup_node
from podnet.datapath.plan import paths_needed
from podnet.datapath.reconcile import Reconciler, ReconcileReport
from podnet.datapath.support import check_kernel_support
from podnet.datapath.tunnels import all_protocols
from podnet.ipam.base import Allocator, IPAMContext, UnsupportedIPAMMode, new_allocator
from podnet.model import IPAddress, IPNetwork, NodeInfo
from podnet.registry import IPAM_MODES
from podnet.specs.ipam import IpamSpec
from podnet.store.client import Store
from podnet.store.datastore import Datastore, Registration
from podnet.store.nodes import NodeEvent, NodeOwnedError, NodeRecord

log = logging.getLogger("podnet.agent")

RESYNC_INTERVAL = 10.0
SWITCH_GRACE = 30.0  # after a live mode switch, peers keep their previous path this long at most
CONFIG_POLL_INTERVAL = 1.0  # how often the config file's mtime is looked at
NODE_GONE_GRACE = 60.0
ERROR_RETRY = 1.0  # seconds before a round that failed to apply something runs again
REPUBLISH_SETTLE = 2.0  # after publishing, give the watch this long to show our record back


class Agent:
    """Owns the node's podnet state; ``start()`` sets up, ``run(stop)`` reconciles until stopped."""

    def __init__(
        self,
        config: AgentConfig,
        requested_pod_cidrs: Sequence[IPNetwork] = (),
        config_path: Path | None = None,
        allow_initial_netns: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})  # --set values: they win over the file on every reload
        self.config_errors: list[str] = []
        self._mode_changed = -SWITCH_GRACE
        self._last_round = 0.0
        self.allow_initial_netns = allow_initial_netns
        self.requested = tuple(requested_pod_cidrs)
        self._config_file = reconfig.WatchedFile(config_path)
        self._reload = threading.Event()
        self._stop = threading.Event()
        self.leaving = False  # SIGUSR1: a departure, not a restart (what peers learnt is withdrawn)
        self._published = 0.0
        self._last_resync = -RESYNC_INTERVAL
        self.reconciler: Reconciler | None = None
        self._node_lock: int | None = None
        self.status_info = AgentStatus()
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._peers: dict[str, NodeRecord] = {}
        self._gone: dict[str, tuple[float, NodeRecord]] = {}
        self.ipr: IPRoute | None = None
        self.store: Store | None = None  # etcd's client (datastore: etcd)
        self.datastore: Datastore | None = None
        self.registration: Registration | None = None
        self.allocator: Allocator | None = None
        self._router_lock = threading.Lock()  # router IPs added between rounds vs a round's removals
        self._prepared: set[IPAddress] = set()
        self.cni_handler: CniHandler | None = None
        self.api: ApiServer | None = None
        self.watcher: Any = None
        self.underlay: Underlay | None = None
        self.pmtu = PathMtuProber(lambda: self.config)
        self.guard = Guard(self._guard_nft, lambda: self.cni_handler.sources() if self.cni_handler else [])
        self.netpol = PolicyEnforcer(
            lambda: wiring.policy_source(self.config, self.store),
            lambda: self.cni_handler.records() if self.cni_handler else [],
            self._guard_nft,
            lambda: self.config.drop_events,
        )
        self.drop_monitor = DropMonitor(lambda: self.config, annotate=self.netpol.annotate)
        self.components: list[comp.Component] = [
            comp.Masquerade(lambda: self.config, self._guard_nft),
            self.guard,
            self.drop_monitor,
            self.pmtu,
            EndpointReaper(lambda: self.cni_handler, lambda: self.config.endpoint_gc_interval),
        ]

    # ---- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Set up and publish the node; nothing is written anywhere before this agent knows it is
        the only one for its node (a lock in its state directory, then the node's claim in the
        store). A restarted agent publishes its complete record at once, identical to the one its
        peers already have, so they never see a node without pod CIDRs or VTEP."""
        check_kernel_support(self.config)
        self._node_lock = hold_node_lock(self.config.state_dir)
        self.ipr = IPRoute()
        self.underlay = detect_underlay(self.ipr, self.config)
        log.info("underlay %s (%s, mtu %d)", self.underlay.dev,
                 self.underlay.ipv4 or self.underlay.ipv6, self.underlay.mtu)  # fmt: skip
        if self.config.underlay_protocol == "ipv6" and self.underlay.ipv6 is None:
            raise AgentError(
                f"underlayProtocol is ipv6 but {self.underlay.dev} has no global IPv6 address: give the node "
                "one, or set underlayProtocol=ipv4"
            )
        conflicts = pool_conflicts(self.config.cluster_pool_ipv4_cidrs, self.underlay)
        if conflicts and not self.ipam_spec.underlay_addresses:
            raise AgentError(
                "; ".join(conflicts) + "; pod addresses must lie outside the underlay: change "
                "clusterPoolIPv4PodCIDRList (nothing was changed)"
            )
        self.datastore, self.store = wiring.open_datastore(self.config)
        bare = NodeInfo(self.config.node_name, self.underlay.ipv4, self.underlay.ipv6)
        try:
            self.registration = self.datastore.register(bare.name, agent_identity(self.config))
        except NodeOwnedError as exc:
            raise AgentError(str(exc)) from None
        if not self.datastore.pod_cidrs(bare.name):  # a new node: ask the operator for pod CIDRs
            self.registration.publish(NodeRecord(bare, self.requested))
        self._set_phase(self.ipam_spec.waiting)
        context = IPAMContext(
            self.datastore,
            self.config.node_name,
            prepare=self._prepare_router_ips,
            changed=self._dirty.set,
            settings=self.config.mode_settings(),
            node_ip=self.underlay.ipv4,
            cluster_pools=tuple(self.config.cluster_pool_ipv4_cidrs),
            mask_size=self.config.cluster_pool_ipv4_mask_size,
        )
        try:
            self.allocator = new_allocator(self.config.ipam_mode, context)
        except UnsupportedIPAMMode as exc:
            raise AgentError(str(exc)) from None
        with self._router_lock:
            node = self._with_ipam(bare)
        # an existing tunnel device stays until the first round knows whether peers still use it
        keep = mode_for(self.config).tunnel(self.config) is not None or any(
            link_index(self.ipr, p.device) is not None for p in all_protocols()
        )
        node = self._setup_node(node, keep)
        if self.config.bgp_enabled:  # an IPv6-only node's router ID is made from its name
            self._set_phase("starting the BGP speaker")
            self.components.append(Bgp(self.config, self.underlay.ipv4, self.underlay.ipv6))
        self.components.append(wiring.datastore_probe(self.datastore, self.store))
        self.components.append(
            NodeReport(
                self.datastore, node.name, lambda: len(self.cni_handler.records()) if self.cni_handler else 0
            )
        )
        for component in self.components:
            component.start(node, self._stop)
        route_mtu = mode_route_mtu(self.config, self.underlay)
        hooks = self._endpoint_hooks()
        self.cni_handler = CniHandler(
            None, self.allocator, route_mtu, self.config.state_dir / "endpoints", guard=hooks,
            pods=wiring.pod_resolver(self.config),
        )  # fmt: skip
        if self.status_info.devices is not None:  # BIG TCP: the sizes the underlay device got
            self.cni_handler.veth_sizes = self.status_info.devices.big_tcp.veth_sizes()
        # NetworkPolicy: the cluster's, with this node's pods from their records, before ready
        self._set_phase("reading NetworkPolicies")
        self.netpol.start(node, self._stop)
        self.components.append(self.netpol)
        restored = getattr(self.allocator, "restored", None)  # a mode that reports its use from now on
        if restored is not None:
            restored()
        for problem in self.cni_handler.set_route_mtu(route_mtu):  # pods from before a restart
            log.warning("%s", problem)
        self._set_phase("syncing nodes from the store")
        self.watcher = self.datastore.watch_nodes(self._on_nodes)
        if not self.watcher.wait_synced(STORE_CONNECT_TIMEOUT):
            raise AgentError(f"the node watch did not sync with {self.datastore.kind}; is it healthy?")
        self.reconcile()
        self.api = serve(self.config.agent_socket, self)
        self.status_info.ready = True
        self._set_phase("running")
        log.info("agent ready: node %s pod CIDRs %s, routing %s", node.name,
                 ", ".join(map(str, node.pod_cidrs)), self.config.routing_mode)  # fmt: skip

    @property
    def ipam_spec(self) -> IpamSpec:
        spec: IpamSpec = IPAM_MODES.spec(self.config.ipam_mode)
        return spec

    def _endpoint_hooks(self) -> Any:
        """What a CNI ADD/DEL tells at once: the pod guard, BPF host routing, and the IPAM mode's
        own component if it has one (the pod's rules, say)."""
        from podnet.agent.host_routing import HostRouting

        def sources() -> Any:
            return self.cni_handler.sources() if self.cni_handler else []

        host_routing = HostRouting(
            lambda: self.config, sources, wake=self._dirty.set, policed=self.netpol.policed
        )
        self.netpol.before_apply = host_routing.resync  # BPF lets policed pods' packets to netfilter first
        self.components.append(host_routing)
        if not self.ipam_spec.agent_component:
            return EndpointHooks(self.guard, self.netpol, host_routing)
        module, _, name = self.ipam_spec.agent_component.partition(":")
        component = getattr(importlib.import_module(module), name)
        routing = component(self.allocator, lambda: self.config, sources, wake=self._dirty.set)
        self.components.append(routing)
        return EndpointHooks(self.guard, self.netpol, routing, host_routing)

    def _prepare_router_ips(self, router_ips: tuple[IPAddress, ...]) -> None:
        """IPAM got a new pod CIDR (or pool address): its router IP goes on podnet_host before any
        pod is given an address behind it; the round that runs meanwhile does not remove it."""
        with self._router_lock:
            with IPRoute() as ipr:
                add_router_ips(ipr, router_ips)
            self._prepared |= set(router_ips)
        log.info("router IP(s) %s added for new pod addresses", ", ".join(map(str, router_ips)))

    def _with_ipam(self, node: NodeInfo) -> NodeInfo:
        """``node`` with IPAM's current pod CIDRs and router IPs (they grow in a mode that asks for more),
        plus router IPs prepared since (under ``_router_lock``)."""
        assert self.allocator is not None
        router_ips = self.allocator.router_ips()
        self._prepared -= set(router_ips)
        extra = tuple(sorted(self._prepared, key=lambda a: (a.version, a)))
        return dataclasses.replace(node, pod_cidrs=self.allocator.cidrs, router_ips=(*router_ips, *extra))

    def _set_phase(self, phase: str) -> None:
        self.status_info.phase = phase
        log.info("%s", phase)

    # ---- the loop ------------------------------------------------------------------------------

    def _on_nodes(self, event: NodeEvent) -> None:
        with self._lock:
            now = time.monotonic()
            keep = self.datastore is None or self.datastore.kind == "etcd"  # see the module docstring
            for name, rec in self._peers.items():
                if name not in event.nodes and keep:
                    self._gone[name] = (now, rec)
            for name in event.nodes:
                self._gone.pop(name, None)
            self._peers = dict(event.nodes)
        self._dirty.set()

    def peers(self) -> list[NodeInfo]:
        """Live nodes, plus nodes gone for less than the grace period (their pods may still be there)."""
        with self._lock:
            now = time.monotonic()
            self._gone = {n: (t, r) for n, (t, r) in self._gone.items() if now - t < NODE_GONE_GRACE}
            records = {**{n: r for n, (_, r) in self._gone.items()}, **self._peers}
        return [r.node for r in records.values()]

    def run(self, stop: threading.Event) -> None:
        # wake the loop at once on stop, so that a stopping agent leaves promptly
        threading.Thread(
            target=lambda: (stop.wait(), self._stop.set(), self._dirty.set()), daemon=True
        ).start()
        while not stop.is_set():
            self._dirty.wait(CONFIG_POLL_INTERVAL)
            if stop.is_set():
                break
            due = time.monotonic() - self._last_round >= RESYNC_INTERVAL
            if self._reload.is_set() or self._config_file.changed():
                self._reload.clear()
                self._reload_from_file()
            elif not self._dirty.is_set() and not due:
                continue
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception as exc:  # one bad round never stops the agent
                log.exception("reconcile failed: %s", exc)
                self.status_info.errors = [f"reconcile failed: {exc}"]

    def _setup_node(self, node: NodeInfo, keep_tunnel: bool) -> NodeInfo:
        """Node devices for the current config (the tunnel device kept while ``keep_tunnel``);
        publishes the node record when what peers see of it changed."""
        assert self.ipr is not None and self.underlay is not None
        devices = setup_node(
            self.ipr, self.config, node, self.underlay.dev,
            allow_initial_netns=self.allow_initial_netns, tunnel=keep_tunnel,
        )  # fmt: skip
        node = dataclasses.replace(node, vtep_mac=devices.vtep_mac, labels=node_labels(self.config))
        if node != self.status_info.node and self.registration is not None:
            self.registration.publish(NodeRecord(node, self.requested))
            self._published = time.monotonic()
            log.info("published node: vtep %s, labels %s", node.vtep_mac, dict(node.labels))
        self.status_info.node, self.status_info.devices = node, devices
        if self.cni_handler is not None:  # pods wired from now on get the underlay's BIG TCP sizes
            self.cni_handler.veth_sizes = devices.big_tcp.veth_sizes()
        return node

    def reconcile(self) -> ReconcileReport:
        """One round: plan (pure) from the store's peers and the kernel's paths, then apply the
        node devices, the peer datapath, the pods' route MTU and every component."""
        assert self.ipr is not None and self.underlay is not None and self.status_info.node is not None
        self._guard_registration()
        started = time.perf_counter()
        peers = self.peers()
        with self._router_lock:  # until the node's devices are set up (see _prepare_router_ips)
            local = LocalNode(
                self._with_ipam(self.status_info.node),
                self.underlay.dev,
                self.underlay.index,
                link_mtu(self.ipr, self.underlay.index),
                6 if self.config.underlay_protocol == "ipv6" else None,
            )
            paths = self._kernel_paths(local, peers)
            switching = time.monotonic() - self._mode_changed < SWITCH_GRACE
            last = self.status_info.last_round
            previous = last.desired if switching and last else None
            endpoints = self.cni_handler.sources() if self.cni_handler is not None else ()
            round_plan = plan_round(self.config, local, peers, paths, previous, endpoints, self._pool_cidrs())
            planned = time.perf_counter()
            tunnel_before = self.status_info.devices.tunnel_index if self.status_info.devices else None
            node = self._setup_node(local.node, round_plan.keep_tunnel_device)
        tunnel_after = self.status_info.devices.tunnel_index if self.status_info.devices else None
        if self.reconciler is None:
            self.reconciler = Reconciler(self.ipr, self.allow_initial_netns)
        # a tunnel device made anew lost its neighbour and FDB entries: read the kernel again
        resync = time.monotonic() - self._last_resync >= RESYNC_INTERVAL or tunnel_after != tunnel_before
        report = self.reconciler.apply(round_plan.desired, resync=resync)
        if resync:
            self._last_resync = time.monotonic()
        if report.errors:  # e.g. an IPv6 source address not usable for a moment: try again soon
            retry = threading.Timer(ERROR_RETRY, self._dirty.set)
            retry.daemon = True
            retry.start()
        self.status_info.round_seconds = (planned - started, time.perf_counter() - planned)
        for issue in round_plan.desired.issues:
            log.warning("peer %s: %s", issue.peer, issue.message)
        for change in report.changes:
            log.info("%s", change.describe())
        errors = list(report.errors)
        if self.status_info.cidr_problem:
            errors.append(self.status_info.cidr_problem)
        if self.allocator is not None:
            errors += self.allocator.problems()
        errors += self._follow_route_mtu(round_plan.route_mtu)
        for component in self.components:
            try:
                errors += component.after_round(node, round_plan, peers)
            except Exception as exc:  # one component's trouble never stops the round
                log.exception("%s: %s", component.name, exc)
                errors.append(f"{component.name}: {exc}")
        self.status_info.last_round, self.status_info.last_report = round_plan, report
        self.status_info.last_reconcile = time.time()
        self._last_round = time.monotonic()
        self.status_info.reconciles += 1
        self.status_info.errors = errors
        return report

    def _kernel_paths(self, local: LocalNode, peers: Sequence[NodeInfo]) -> dict[str, PeerPath]:
        assert self.ipr is not None
        paths: dict[str, PeerPath] = {}
        for ip in paths_needed(local, peers, self.config):
            try:
                paths[str(ip)] = route_get(self.ipr, ip)
            except Exception as exc:  # an unroutable peer is a plan input, not a crash
                log.warning("no kernel path to node ip %s: %s", ip, exc)
        return paths

    def _guard_registration(self) -> None:
        """Our own record as the watch last saw it: put it back if it vanished or was changed."""
        if self.registration is None or time.monotonic() - self._published < REPUBLISH_SETTLE:
            return
        with self._lock:
            seen = self._peers.get(self.config.node_name)
        if self.registration.ensure(seen):
            self._published = time.monotonic()
        if self.ipam_spec.static_cidrs:
            self.status_info.cidr_problem = cidr_change(self.allocator, seen)

    def _pool_cidrs(self) -> tuple[IPNetwork, ...]:
        """Every pool's CIDRs IPAM knows of (a mode with named pools): masquerading spares them all."""
        if self.allocator is None:
            return ()
        return tuple(dict.fromkeys(c for use in self.allocator.usage() for c in use.pool_cidrs))

    def _guard_nft(self) -> None:
        refuse_initial_netns(self.ipr, "write podnet's nft table", self.allow_initial_netns)

    def _follow_route_mtu(self, route_mtu: int) -> list[str]:
        """After a mode or MTU change (or a restart after one), every pod's default route takes
        the new route MTU; failures are reported and retried next round."""
        if self.cni_handler is None or route_mtu == self.cni_handler.route_mtu:
            return []
        old = self.cni_handler.route_mtu
        errors = self.cni_handler.set_route_mtu(route_mtu)
        if errors:
            log.warning("pod route MTU %d -> %d incomplete: %s", old, route_mtu, "; ".join(errors))
        else:
            log.info("pod route MTU %d -> %d", old, route_mtu)
        return errors

    # ---- live reconfiguration ------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: read the config file again at the next loop turn, and probe path MTUs now."""
        self._config_file.changed()  # take the current mtime: one SIGHUP, one reload
        self._reload.set()
        self._dirty.set()
        self.pmtu.probe_now()

    def reload(self, new: AgentConfig) -> list[str]:
        """Adopt ``new`` if only live settings changed and the kernel can do it; returns what was
        refused (restart-only settings, or the reason). A refusal stays in ``status`` until the
        next successful reload, so ``podnet config set`` reports it instead of "converged"."""
        refused = reconfig.refusal(self.config, new)
        if refused is not None:
            return self._refuse(*refused)
        changed = reconfig.changed(self.config, new)
        if changed:
            log.info("config reloaded: %s", ", ".join(changed))
        if reconfig.paths_switch(self.config, new):
            self._mode_changed = time.monotonic()  # peers switch over the next moments: bridge the gap
        self.config = new
        self.config_errors = []
        self._dirty.set()
        return []

    def _refuse(self, why: str, what: list[str]) -> list[str]:
        log.error("config change not applied: %s", why)
        self.config_errors = [f"config change not applied: {why}; the agent keeps its running settings"]
        return what

    def _reload_from_file(self) -> None:
        if self.config_path is None:
            return
        try:
            new = load_config_file(self.config_path, os.environ, self.overrides)
        except ConfigError as exc:
            self._refuse(f"{self.config_path}: {exc}", [exc.key])
            return
        self.reload(new)

    # ---- API -----------------------------------------------------------------------------------

    def cni(self, call: answer.Call) -> dict[str, Any]:
        if self.cni_handler is None:
            return {"ok": False, "code": 11, "msg": "agent is starting", "details": self.status_info.phase}
        return self.cni_handler.cni(call)

    def drops(self, since: int) -> dict[str, Any]:
        """The drop monitor's events after ``since`` (``podnet drops``)."""
        return self.drop_monitor.events(since)

    def policy(self, ip: str) -> dict[str, Any]:
        """The NetworkPolicy rules in force for the local pod at ``ip`` (``podnet policy show``)."""
        import ipaddress

        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return {"ok": False, "msg": f"{ip!r} is not an address"}
        return {
            "ok": True,
            "node": self.config.node_name,
            **self.netpol.status(),
            **self.netpol.explain(address),
        }

    def status(self) -> dict[str, Any]:
        if self.cni_handler is not None:  # the node as it is once the DELs answered so far are done
            self.cni_handler.retired.flush(2.0)
        doc = status_document(
            self.config,
            self.status_info,
            self.allocator,
            self.peers(),
            {c.name: c.status() for c in self.components},
            connected=self.datastore is not None,
            config_errors=self.config_errors,
        )
        doc["failedAdds"] = list(self.cni_handler.failed_adds) if self.cni_handler is not None else []
        return doc

    # ---- stop ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop serving and leave the store; the kernel datapath stays so pods keep working."""
        self._stop.set()
        for closer in (
            lambda: self.api and self.api.close(),
            # a component that peers see (BGP) detaches: what they learnt stays until the next
            # agent; only a departure (SIGUSR1) stops it, which withdraws
            *(c.stop if self.leaving else getattr(c, "detach", c.stop) for c in reversed(self.components)),
            lambda: self.watcher and self.watcher.stop(),
            lambda: self.allocator and self.allocator.close(),
            # the lease is not revoked: the node key lapses after its TTL, so a restart is not a departure
            lambda: self.registration and self.registration.close(revoke=False),
            lambda: self.datastore and self.datastore.close(),
            lambda: self.ipr and self.ipr.close(),
            lambda: self._node_lock is not None and os.close(self._node_lock),
        ):
            try:
                closer()
            except Exception as exc:  # shutting down goes on
                log.warning("during shutdown: %s", exc)
