"""The podnet agent: one per node. Register, get pod CIDRs, set up devices, then plan and apply.

Restart-safe by construction (Calico Felix's rule): nothing in the kernel is changed until the
node watch has synced the whole node set, endpoint allocations are restored from the records
the CNI handler keeps, and the reconciler only ever touches what carries podnet's marks. A node
that vanishes from the store keeps its routes for ``NODE_GONE_GRACE`` seconds, so an agent
restart elsewhere does not cut its pods off.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from pyroute2 import IPRoute

from podnet.agent.api import ApiServer, serve
from podnet.agent.cni_handler import CniHandler
from podnet.agent.underlay import Underlay, detect_underlay
from podnet.config import AgentConfig, check_kernel_support
from podnet.datapath import mtu
from podnet.datapath.kernel.route import route_get
from podnet.datapath.modes.base import DesiredState, LocalNode, PeerPath
from podnet.datapath.nodesetup import NodeDevices, setup_node
from podnet.datapath.plan import paths_needed, plan
from podnet.datapath.reconcile import Reconciler, ReconcileReport
from podnet.ipam.base import Allocator, IPAMContext, new_allocator
from podnet.model import IPNetwork, NodeInfo
from podnet.store.client import Store, StoreError
from podnet.store.nodes import NodeEvent, NodeRecord, NodeRegistration, register_node, watch_nodes

log = logging.getLogger("podnet.agent")

RESYNC_INTERVAL = 10.0
NODE_GONE_GRACE = 60.0
STORE_CONNECT_TIMEOUT = 60.0


class AgentError(RuntimeError):
    """The agent cannot start; the message says what to fix."""


@dataclasses.dataclass
class AgentStatus:
    """What the agent knows about itself, served to ``podnet status`` and the lab."""

    ready: bool = False
    phase: str = "starting"
    node: NodeInfo | None = None
    devices: NodeDevices | None = None
    last_plan: DesiredState | None = None
    last_report: ReconcileReport | None = None
    last_reconcile: float = 0.0
    reconciles: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


class Agent:
    """Owns the node's podnet state; ``start()`` sets up, ``run(stop)`` reconciles until stopped."""

    def __init__(self, config: AgentConfig, requested_pod_cidrs: Sequence[IPNetwork] = ()) -> None:
        self.config = config
        self.requested = tuple(requested_pod_cidrs)
        self.status_info = AgentStatus()
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._peers: dict[str, NodeRecord] = {}
        self._gone: dict[str, tuple[float, NodeRecord]] = {}
        self.ipr: IPRoute | None = None
        self.store: Store | None = None
        self.registration: NodeRegistration | None = None
        self.allocator: Allocator | None = None
        self.cni_handler: CniHandler | None = None
        self.api: ApiServer | None = None
        self.watcher: Any = None
        self.underlay: Underlay | None = None

    # ---- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        check_kernel_support(self.config)
        self.ipr = IPRoute()
        self.underlay = detect_underlay(self.ipr, self.config)
        log.info("underlay %s (%s, mtu %d)", self.underlay.dev, self.underlay.ipv4, self.underlay.mtu)
        self.store = _connect(self.config.etcd_endpoints)
        bare = NodeInfo(self.config.node_name, self.underlay.ipv4)
        self.registration = register_node(self.store, bare, requested_pod_cidrs=self.requested)
        self._set_phase("waiting for pod CIDRs from the operator")
        self.allocator = new_allocator(self.config.ipam_mode, IPAMContext(self.store, self.config.node_name))
        node = dataclasses.replace(
            bare, pod_cidrs=self.allocator.cidrs, router_ips=self.allocator.router_ips()
        )
        devices = setup_node(self.ipr, self.config, node, self.underlay.dev)
        node = dataclasses.replace(node, vtep_mac=devices.vtep_mac)
        self.registration.update(NodeRecord(node, self.requested))
        self.status_info.node, self.status_info.devices = node, devices
        route_mtu = mtu.route_mtu(self.config, devices.underlay_mtu)
        router_v4 = node.router_ip_for(4)
        if not isinstance(router_v4, ipaddress.IPv4Address):
            raise AgentError(f"node {node.name} has no IPv4 pod CIDR; check the operator's cluster pool")
        self.cni_handler = CniHandler(
            None, self.allocator, router_v4, route_mtu, self.config.state_dir / "endpoints"
        )
        self._set_phase("syncing nodes from the store")
        self.watcher = watch_nodes(self.store, self._on_nodes)
        if not self.watcher.wait_synced(STORE_CONNECT_TIMEOUT):
            raise AgentError("the node watch did not sync with etcd; is etcd healthy?")
        self.reconcile()
        self.api = serve(self.config.agent_socket, self)
        self.status_info.ready = True
        self._set_phase("running")
        log.info("agent ready: node %s pod CIDRs %s, routing %s", node.name,
                 ", ".join(map(str, node.pod_cidrs)), self.config.routing_mode)  # fmt: skip

    def _set_phase(self, phase: str) -> None:
        self.status_info.phase = phase
        log.info("%s", phase)

    # ---- the loop ------------------------------------------------------------------------------

    def _on_nodes(self, event: NodeEvent) -> None:
        with self._lock:
            now = time.monotonic()
            for name, rec in self._peers.items():
                if name not in event.nodes:
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
        while not stop.is_set():
            self._dirty.wait(RESYNC_INTERVAL)
            if stop.is_set():
                break
            self._dirty.clear()
            try:
                self.reconcile()
            except Exception as exc:  # one bad round never stops the agent
                log.exception("reconcile failed: %s", exc)
                self.status_info.errors = [f"reconcile failed: {exc}"]

    def reconcile(self) -> ReconcileReport:
        assert self.ipr is not None and self.status_info.node is not None and self.underlay is not None
        local = LocalNode(self.status_info.node, self.underlay.dev, self.underlay.index, self.underlay.mtu)
        peers = self.peers()
        paths: dict[str, PeerPath] = {}
        for ip in paths_needed(local, peers, self.config):
            try:
                paths[str(ip)] = route_get(self.ipr, ip)
            except Exception as exc:  # an unroutable peer is a plan input, not a crash
                log.warning("no kernel path to node ip %s: %s", ip, exc)
        desired = plan(local, peers, self.config, paths)
        report = Reconciler(self.ipr, self.config).apply(desired)
        for issue in desired.issues:
            log.warning("peer %s: %s", issue.peer, issue.message)
        for change in report.changes:
            log.info("%s", change.describe())
        self.status_info.last_plan, self.status_info.last_report = desired, report
        self.status_info.last_reconcile = time.time()
        self.status_info.reconciles += 1
        self.status_info.errors = list(report.errors)
        return report

    # ---- API -----------------------------------------------------------------------------------

    def cni(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.cni_handler is None:
            return {"ok": False, "code": 11, "msg": "agent is starting", "details": self.status_info.phase}
        return self.cni_handler.cni(request)

    def status(self) -> dict[str, Any]:
        from podnet.agent.status import status_document

        return status_document(self)

    # ---- stop ----------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop serving and leave the store; the kernel datapath stays so pods keep working."""
        for closer in (
            lambda: self.api and self.api.close(),
            lambda: self.watcher and self.watcher.stop(),
            lambda: self.registration and self.registration.close(revoke=True),
            lambda: self.store and self.store.close(),
            lambda: self.ipr and self.ipr.close(),
        ):
            try:
                closer()
            except Exception as exc:  # shutting down goes on
                log.warning("during shutdown: %s", exc)


def _connect(endpoints: Sequence[str]) -> Store:
    if not endpoints:
        raise AgentError("no etcd endpoints: set etcd.endpoints (e.g. http://10.0.0.1:2379)")
    deadline = time.monotonic() + STORE_CONNECT_TIMEOUT
    while True:
        store = Store(list(endpoints))
        try:
            store.get("/podnet/v1/ping")
            return store
        except StoreError as exc:
            store.close()
            if time.monotonic() > deadline:
                raise AgentError(f"cannot reach etcd at {', '.join(endpoints)}: {exc}") from exc
            log.info("waiting for etcd at %s: %s", ", ".join(endpoints), exc)
            time.sleep(0.5)
