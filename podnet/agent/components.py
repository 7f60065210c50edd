"""The agent's components: masquerading, the path-MTU prober, the BGP speaker, the node report
and the store probe.

Each has the same small life: ``start(node, stop)`` once the node is known, ``after_round(node,
round)`` after every applied round (returning errors for status), ``status()`` for the status
document, and ``stop()``. The agent holds a list of them and knows none of their insides.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pyroute2 import IPRoute

from podnet import owned
from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath.guard import TABLE as GUARD_TABLE_SPEC
from podnet.datapath.guard import (
    EndpointSource,
    GuardPlan,
    add_endpoint_script,
    delete_endpoint_script,
)
from podnet.datapath.guard import apply_script as guard_script
from podnet.datapath.kernel.nft import NftError, apply_script, list_table
from podnet.datapath.kernel.route import cached_path_mtu
from podnet.datapath.masquerade import MasqueradePlan, replace_script
from podnet.datapath.modes import mode_for
from podnet.datapath.modes.base import Reach, node_ip_for
from podnet.datapath.pmtu import PathMtu, probe_families, probe_peers, required_size, small_ping
from podnet.model import Endpoint, NodeInfo
from podnet.store.client import Backoff, OutageLog, Store, StoreError
from podnet.store.datastore import Datastore, DatastoreError

log = logging.getLogger("podnet.agent")

PMTU_INTERVAL = 30.0  # seconds between path MTU probes of every peer (SIGHUP probes at once)
PMTU_BATCH = 64  # at most this many DF probes per interval (distinct peer addresses, rotating)
DRIFT_CHECK_INTERVAL = 10.0  # how often the masquerade table is checked for changes behind our back
HEARTBEAT_INTERVAL = 30.0  # how often the agent tells the operator it is alive (below its grace period)
PROBE_INTERVAL = 5.0  # how often the store is probed for status while it answers
PROBE_KEY = "/podnet/v1/ping"


class Component(Protocol):
    name: str

    def start(self, node: NodeInfo, stop: threading.Event) -> None: ...

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class NftTable:
    """One of podnet's nft tables in the node's namespace: a script is applied (one transaction)
    when it differs from the last one applied, or when the table was removed or brought back
    behind podnet's back (looked at every ``DRIFT_CHECK_INTERVAL``)."""

    def __init__(
        self, family: str, table: str, guard: Callable[[], None], apply: Callable[[str], None]
    ) -> None:
        self.family, self.table = family, table
        self._guard = guard  # refuses the machine's own namespace
        self.apply = apply
        self._script: str | None = None
        self._checked = 0.0

    def sync(self, script: str, want_table: bool) -> str | None:
        """Apply ``script`` if needed; returns nft's error, or None."""
        if script == self._script and not self._drifted(want_table):
            return None
        self._guard()
        try:
            self.apply(script)
        except NftError as exc:
            log.error("%s", exc)
            self._script = None
            return str(exc)
        self._script = script
        log.info("nft table %s %s %s", self.family, self.table, "applied" if want_table else "removed")
        return None

    def _drifted(self, want_table: bool) -> bool:
        now = time.monotonic()
        if now - self._checked < DRIFT_CHECK_INTERVAL:
            return False
        self._checked = now
        return (list_table(self.table, self.family) is not None) != want_table


class Masquerade:
    """``table ip podnet``: SNAT of pod traffic leaving the node (``podnet.datapath.masquerade``)."""

    name = "masquerade"

    def __init__(
        self,
        config: Callable[[], AgentConfig],
        guard: Callable[[], None],
        apply: Callable[[str], None] = apply_script,
    ) -> None:
        self._config = config
        self._table = NftTable("ip", owned.NFT_TABLE, guard, apply)
        self._table6 = NftTable("ip6", owned.NFT_TABLE, guard, apply)
        self.applied: MasqueradePlan | None = None
        self.applied6: MasqueradePlan | None = None

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        errors = []
        for table, plan, family in (
            (self._table, round_plan.masquerade, 4),
            (self._table6, round_plan.masquerade6, 6),
        ):
            error = table.sync(replace_script(plan, family), plan is not None)
            if error is not None:
                errors.append(error)
            elif family == 4:
                self.applied = plan
            else:
                self.applied6 = plan
        return errors

    def status(self) -> dict[str, Any]:
        """What is applied (the table in this namespace), not only what is configured."""
        plan = self.applied
        return {
            "enableIPv4Masquerade": self._config().enable_ipv4 and self._config().enable_ipv4_masquerade,
            "mode": "nftables" if plan is not None else "disabled",
            "table": "ip podnet" if plan is not None else None,
            "device": plan.egress_dev if plan is not None else None,
            "exempt": [str(c) for c in plan.exempt] if plan is not None else _exempt(self._config()),
            "ipv6": {
                "enableIPv6Masquerade": self._config().enable_ipv6_masquerade,
                "mode": "nftables" if self.applied6 is not None else "disabled",
                "table": "ip6 podnet" if self.applied6 is not None else None,
                "exempt": [str(c) for c in self.applied6.exempt] if self.applied6 is not None else [],
            },
        }

    def stop(self) -> None:
        return None  # the table stays: pods keep their egress while the agent is down


def _exempt(config: AgentConfig) -> list[str]:
    native = [config.ipv4_native_routing_cidr] if config.ipv4_native_routing_cidr else []
    return [str(c) for c in ipaddress.collapse_addresses([*config.cluster_pool_ipv4_cidrs, *native])]


class PathMtuProber:
    """DF-probes every peer at the size the current plan sends it (``podnet.datapath.pmtu``), every
    ``PMTU_INTERVAL`` seconds and at once on ``probe_now`` (SIGHUP): one probe per distinct
    address and size, at most ``PMTU_BATCH`` per interval (a rotating share in large clusters)."""

    name = "pathMTU"

    def __init__(self, config: Callable[[], AgentConfig]) -> None:
        self._config = config
        self._round: RoundPlan | None = None
        self._peers: dict[str, NodeInfo] = {}
        self._now = threading.Event()
        self._cursor = 0
        self.results: list[PathMtu] = []
        self.checked = 0.0
        self.pod_side: dict[str, dict[str, Any]] = {}  # peer -> its pod side answered (health)

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        threading.Thread(target=self._loop, args=(stop,), name="pmtu", daemon=True).start()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        self._round, self._peers = round_plan, {p.name: p for p in peers}
        return []

    def probe_now(self) -> None:
        self._now.set()

    def _underlay_family(self) -> int:
        return 6 if self._config().underlay_protocol == "ipv6" else 4

    def _overhead(self, reach: Reach | None) -> int:
        config = self._config()
        protocol = mode_for(config).tunnel(config)
        tunnelled = protocol is not None and reach is Reach.TUNNEL
        return protocol.overhead(self._underlay_family()) if tunnelled else 0

    def probe(self) -> list[PathMtu]:
        round_plan = self._round
        if round_plan is None:
            return []
        desired, config = round_plan.desired, self._config()
        pod_families = [f for f, on in ((4, config.enable_ipv4), (6, config.enable_ipv6)) if on]
        wanted: dict[tuple[object, int], str] = {}  # one probe per (address, size), named by one peer
        for name, reach in desired.reach:
            size = required_size(reach, desired.route_mtu, self._overhead(Reach.TUNNEL))
            peer = self._peers.get(name)
            if size is None or peer is None:
                continue
            for family in probe_families(reach, pod_families, self._underlay_family()):
                if (address := node_ip_for(peer, family)) is not None:
                    wanted.setdefault((address, size), name)
        targets = sorted(
            ((name, addr, size) for (addr, size), name in wanted.items()), key=lambda t: str(t[1])
        )
        if len(targets) > PMTU_BATCH:  # large clusters: a rotating share of the peers each interval
            start = self._cursor % len(targets)
            targets = (targets[start:] + targets[:start])[:PMTU_BATCH]
            self._cursor += PMTU_BATCH
        with IPRoute() as ipr:
            results = probe_peers(targets, lambda addr: cached_path_mtu(ipr, addr))
        self._probe_pod_sides({name for name, _, _ in targets})
        for res in results:
            if not res.ok:
                log.warning("%s", res.message(self._overhead(desired.reach_of(res.peer))))
        merged = {r.address: r for r in self.results if r.peer in self._peers}
        merged.update({r.address: r for r in results})
        self.results, self.checked = list(merged.values()), time.time()
        return results

    def _probe_pod_sides(self, names: set[str]) -> None:
        """The peers' health over the pod path (their first router IP: through the tunnel in
        tunnel mode, natively otherwise), beside the underlay and full-size probes above."""
        now = time.time()
        for name in sorted(names):
            peer = self._peers.get(name)
            if peer is None or not peer.router_ips:
                continue
            address = str(peer.router_ips[0])
            ok, detail = small_ping(address)
            self.pod_side[name] = {"address": address, "ok": ok, "detail": detail, "checked": now}
        for gone in set(self.pod_side) - set(self._peers):
            del self.pod_side[gone]

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.probe()
            except Exception as exc:  # probing is advice; it never stops the agent
                log.warning("path MTU probe failed: %s", exc)
            self._now.wait(PMTU_INTERVAL)
            self._now.clear()

    def status(self) -> dict[str, Any]:
        desired = self._round.desired if self._round is not None else None
        return {
            "checked": self.checked,
            "peers": [
                {
                    "peer": r.peer,
                    "address": r.address,
                    "required": r.required,
                    "ok": r.ok,
                    "discovered": r.discovered,
                    "reachable": r.reachable,
                    "message": r.message(self._overhead(desired.reach_of(r.peer) if desired else None)),
                }
                for r in {(p.peer, ":" in p.address): p for p in self.results}.values()
            ],
            "podSide": self.pod_side,
        }

    def stop(self) -> None:
        self._now.set()


class Bgp:
    """The node's BGP speaker (``podnet.bgp.speaker``): announces the node's pod CIDRs, follows
    their changes, withdraws them when BGP is switched off (``stop``) and leaves them to the
    routers' graceful restart when the agent stops (``detach``: a restart is no departure)."""

    name = "bgp"

    def __init__(
        self,
        config: AgentConfig,
        node_ip: ipaddress.IPv4Address | None,
        node_ip6: ipaddress.IPv6Address | None,
    ) -> None:
        from podnet.bgp.speaker import BgpController

        self.controller = BgpController(config, node_ip, config.state_dir / "bgp", node_ip6=node_ip6)

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        self.controller.start(node.pod_cidrs)

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        self.controller.set_prefixes(node.pod_cidrs)
        return []

    def status(self) -> dict[str, Any]:
        return self.controller.status()

    def stop(self) -> None:
        self.controller.stop(withdraw=True)

    def detach(self) -> None:
        self.controller.stop(withdraw=False, abrupt=True)


class NodeReport:
    """Tells the operator that this node's agent is alive and how many pod endpoints it serves
    (``/podnet/v1/nodestate/<node>``): written when the count changes and every
    ``HEARTBEAT_INTERVAL`` seconds. The operator never reclaims the pod CIDRs of a node that
    reported recently, and fences those of a gone node that last reported endpoints."""

    name = "nodeReport"

    def __init__(self, datastore: Datastore, node_name: str, endpoints: Callable[[], int]) -> None:
        self._datastore = datastore
        self._node = node_name
        self._endpoints = endpoints
        self.reported: tuple[float, int] | None = None
        self.error = ""

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        count, now = self._endpoints(), time.time()
        if (
            self.reported is not None
            and self.reported[1] == count
            and now - self.reported[0] < HEARTBEAT_INTERVAL
        ):
            return []
        try:
            self._datastore.report(self._node, count, now)
        except DatastoreError as exc:
            if not self.error:
                log.warning("cannot report this node's state to the store: %s", exc)
            self.error = str(exc)
            return []  # the store's own status says it is down; the datapath does not depend on this
        if self.error:
            log.info("node state reported again")
        self.reported, self.error = (now, count), ""
        return []

    def status(self) -> dict[str, Any]:
        when, count = self.reported or (0.0, 0)
        return {"reported": when, "endpoints": count, "error": self.error or None}

    def stop(self) -> None:
        return None


class StoreProbe:
    """A real probe of the store for status: etcd's ``maintenance/status`` every
    ``PROBE_INTERVAL`` seconds (longer, with back-off, while it fails), with the time of the last
    success; outages are logged as state changes."""

    name = "kvstore"

    def __init__(self, store: Store) -> None:
        self._store = store.clone()
        self._outage = OutageLog(log, "etcd probe")
        self.version = ""
        self.leader = 0

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        self.probe()
        threading.Thread(target=self._loop, args=(stop,), name="kvstore-probe", daemon=True).start()

    def probe(self) -> bool:
        """A linearizable read (it needs a quorum, as every write does), then the member's status
        for the version; ``maintenance/status`` alone is answered by a member without quorum."""
        try:
            self._store.get(PROBE_KEY)
            answer = self._store.status()
        except StoreError as exc:
            self._outage.failed(exc)
            return False
        self._outage.recovered()
        self.version = str(answer.get("version", ""))
        self.leader = int(answer.get("leader", 0) or 0)
        return True

    def _loop(self, stop: threading.Event) -> None:
        backoff = Backoff(first=PROBE_INTERVAL, cap=4 * PROBE_INTERVAL)
        while not stop.wait(PROBE_INTERVAL if self._store.health.ok else backoff.next()):
            if self.probe():
                backoff.reset()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        health = self._store.health
        return {
            "endpoints": list(self._store.endpoints),
            "active": self._store.endpoint,
            "state": "ok" if health.ok else "unreachable",
            "version": self.version or None,
            "lastSuccess": health.last_success,
            "failingSince": health.failing_since or None,
            "error": health.last_error if not health.ok else None,
            "connected": health.ok,  # kept for readers of the older document
            "tls": self._store.tls is not None,
        }

    def stop(self) -> None:
        self._store.close()


class Guard:
    """The pod guard (``podnet.datapath.guard``): applies the round's table, and lets a new pod's
    addresses in (and an old pod's out) at once from the CNI handler, between rounds."""

    name = "guard"

    def __init__(
        self,
        guard: Callable[[], None],
        sources: Callable[[], Sequence[EndpointSource]] = list,
        apply: Callable[[str], None] = apply_script,
    ) -> None:
        self._sources = sources  # the pod interfaces now (the CNI handler's records)
        self._table = NftTable("inet", owned.GUARD_TABLE, guard, apply)
        self.applied: GuardPlan | None = None

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        plan = round_plan.guard
        off = f"add table {GUARD_TABLE_SPEC}\ndelete table {GUARD_TABLE_SPEC}\n"
        error = self._table.sync(guard_script(plan) if plan is not None else off, plan is not None)
        if error is not None:
            return [f"pod guard: {error}"]
        self.applied = plan
        if plan is not None:
            self._catch_up(plan)
        return []

    def _catch_up(self, plan: GuardPlan) -> None:
        """The round planned from the pod interfaces of its start; one a CNI ADD recorded since
        was let in at once (``allow``), and applying the round's table may just have undone that:
        let every interface recorded now but not in the plan in again (the next round plans it)."""
        if not plan.source_verification:
            return
        planned = {e.host_ifname: e for e in plan.endpoints}
        for source in self._sources():
            if planned.get(source.host_ifname) != source:
                script = add_endpoint_script(source)
                if script:
                    self._table.apply(script)
                    log.info("pod guard: %s let in again (recorded during the round)", source.host_ifname)

    def allow(self, source: EndpointSource) -> None:
        """Let a new pod interface send from its addresses (before it is wired: fail closed)."""
        if self.applied is not None and self.applied.source_verification:
            script = add_endpoint_script(source)
            if script:
                self._table.apply(script)

    def revoke(self, source: EndpointSource) -> None:
        """Forget a pod interface's addresses (gone already is fine)."""
        if self.applied is not None and self.applied.source_verification:
            with contextlib.suppress(NftError):
                self._table.apply(delete_endpoint_script(source))

    def status(self) -> dict[str, Any]:
        plan = self.applied
        if plan is None:
            return {"enabled": False}
        table = list_table(owned.GUARD_TABLE, "inet") or {}
        counters: dict[str, int] = {}
        spoofed: dict[str, int] = {}
        for item in table.get("nftables", []):
            if "counter" in item:
                counters[item["counter"]["name"]] = int(item["counter"].get("packets", 0))
            if "set" in item and item["set"].get("name") == "spoofed":
                for element in item["set"].get("elem", []):
                    inner = element.get("elem", {}) if isinstance(element, dict) else {}
                    spoofed[str(inner.get("val"))] = int((inner.get("counter") or {}).get("packets", 0))
        return {
            "enabled": True,
            "sourceVerification": plan.source_verification,
            "isolation": plan.isolation,
            "table": GUARD_TABLE_SPEC,
            "drops": counters,
            "endpoints": [
                {
                    "hostIfname": e.host_ifname,
                    "addresses": [str(a) for a in e.addresses],
                    "spoofDrops": spoofed.get(e.host_ifname, 0),
                }
                for e in self._sources()
            ],
            "tunnelSources": [str(a) for a in plan.peer_underlay],
            "nodePorts": [f"{port}/{proto}" for proto, port in plan.node_ports],
        }

    def stop(self) -> None:
        return None  # the table stays: pods stay confined while the agent is down


class EndpointSweeper(Protocol):
    """The CNI handler's view of attachments whose pod namespace is gone (``CniHandler``)."""

    def stale(self) -> list[Endpoint]: ...

    def reap_stale(self) -> list[Endpoint]: ...

    def records(self) -> list[Endpoint]: ...


class EndpointReaper:
    """Frees the attachments of pods whose namespace is gone without a CNI DEL (containerd's
    ``ctr run --cni`` after kill and rm, a runtime that crashed): every ``endpointGCInterval``
    (Cilium's setting; 0 turns it off) their addresses, guard entries and records go. A pod's
    namespace going away takes the veth with it, so "node-side link gone" is the sign, and it
    never needs the namespace's path."""

    name = "endpoints"

    def __init__(self, handler: Callable[[], EndpointSweeper | None], interval: Callable[[], float]) -> None:
        self._handler = handler
        self._interval = interval
        self.reaped = 0
        self.last_reaped: list[str] = []
        self.last_sweep: float | None = None

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        threading.Thread(target=self._loop, args=(stop,), name="podnet-endpoint-gc", daemon=True).start()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(min(self._interval() or 5.0, 3600.0)):
            if self._interval() > 0:
                self.sweep()

    def sweep(self) -> list[Endpoint]:
        handler = self._handler()
        if handler is None:
            return []
        try:
            gone = handler.reap_stale()
        except Exception as exc:  # the next sweep tries again
            log.warning("endpoint GC failed: %s", exc)
            return []
        self.last_sweep = time.time()
        for record in gone:
            log.info(
                "endpoint GC: %s/%s (%s) released: its network namespace is gone and no CNI DEL came",
                record.container_id, record.ifname, ", ".join(str(a.ip) for a in record.addresses),
            )  # fmt: skip
        self.reaped += len(gone)
        if gone:
            self.last_reaped = [f"{r.container_id}/{r.ifname}" for r in gone]
        return gone

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        return []

    def status(self) -> dict[str, Any]:
        handler = self._handler()
        records = handler.records() if handler is not None else []
        stale = handler.stale() if handler is not None else []
        listed = [
            {"containerID": r.container_id, "ifname": r.ifname, "netns": r.netns,
             "addresses": [str(a) for a in r.addresses]}
            for r in stale
        ]  # fmt: skip
        return {
            "total": len(records),
            "stale": listed,
            "gcInterval": self._interval(),
            "reaped": self.reaped,
            "lastReaped": self.last_reaped,
            "lastSweep": self.last_sweep,
        }

    def stop(self) -> None:
        return None


class EndpointHooks:
    """Several endpoint hooks as one (the CNI handler's ``guard``): the pod guard, policy, the IPAM mode's
    component (ENI rules), BPF host routing, in that order."""

    def __init__(self, *hooks: Any) -> None:
        self._hooks = hooks

    def allow(self, source: EndpointSource) -> None:
        for hook in self._hooks:
            hook.allow(source)

    def revoke(self, source: EndpointSource) -> None:
        for hook in self._hooks:
            hook.revoke(source)
