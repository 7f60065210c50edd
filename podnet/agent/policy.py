"""The agent's NetworkPolicy component: reads NetworkPolicies, Pods and Namespaces of the whole
cluster from its source (the API server, or etcd: ``podnet.policy.sources``), resolves what the
policies allow (``podnet.policy.resolve``) for the pods on this node (ingress to them, egress from
them) and keeps the node's
``table inet podnet_policy`` equal to it (``podnet.policy.nft``, one transaction per change).

Design facts: the table is applied on every change of a policy, a pod's labels or addresses, or
a namespace's labels (debounced by ``SETTLE``); a pod of this node is found by its CNI record
(its addresses are known before its Pod object shows them), other pods by their Pod objects.
The table outlives the agent: killed, restarted, the policy in force stays until the new agent
has read the cluster and applies the same (or the newer) table. A policy the API server would
refuse is left out and named in status. Nothing is read from a pod.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from podnet.agent.round import RoundPlan
from podnet.datapath.kernel.nft import NftError, apply_script, list_table
from podnet.model import Endpoint, NodeInfo
from podnet.policy import nft
from podnet.policy.model import parse_policies
from podnet.policy.resolve import Address, PodInfo, Resolved, resolve
from podnet.policy.sources import PolicySource
from podnet.statusdoc.policy import PolicyStatus

log = logging.getLogger("podnet.agent")

SETTLE = 0.05  # seconds: changes that arrive together are applied together
SYNC_TIMEOUT = 20.0  # seconds the agent waits for the watches before it goes on (status says why)
PUBLISH_RETRY = 2.0  # seconds before a failed publish of this node's pods (etcd) is tried again
DRIFT_CHECK = 10.0  # seconds between checks that the table is still there


def merge_local(pods: list[PodInfo], records: Sequence[Endpoint]) -> list[PodInfo]:
    """The cluster's pods with this node's own taken from their CNI records (pure): a pod is
    policed from its first packet, before its Pod object shows its address (kubelet writes it
    after the ADD); its labels are the object's when known, else those recorded at ADD."""
    by_key = {p.key: p for p in pods}
    out = {p.key: p for p in pods}
    for r in records:
        key = f"{r.pod_namespace or 'default'}/{r.pod_name}"
        if not r.pod_name:
            continue
        known = by_key.get(key)
        ips = tuple(dict.fromkeys((*(known.ips if known else ()), *(a.ip for a in r.addresses))))
        labels = dict(known.labels) if known else dict(r.pod_labels)
        ports = known.ports if known else ()
        out[key] = PodInfo(
            r.pod_namespace or "default", r.pod_name, labels, ips, ports, known.node if known else None
        )
    return list(out.values())


class PolicyEnforcer:
    name = "policy"

    def __init__(
        self,
        source: Callable[[], PolicySource] | None,
        local: Callable[[], Sequence[Endpoint]],
        guard: Callable[[], None],
        drop_events: Callable[[], bool],
    ) -> None:
        """``source``: makes the datastore's policy source once the datastore is open."""
        self._make_source = source
        self._source: PolicySource | None = None
        self._node = ""
        self._local = local
        self._guard = guard  # refuses the machine's own namespace
        self._drop_events = drop_events
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        # called with the new policed set in force, before the table: BPF host routing hands
        # those pods' packets to netfilter first (never a moment where BPF bypasses a new table)
        self.before_apply: Callable[[], None] = lambda: None
        self._script: str | None = None
        self._checked = 0.0
        self.resolved = Resolved()
        self.invalid: list[str] = []
        self.policies = 0
        self.applied_at = 0.0
        self.error = ""
        self.covered: dict[str, int] = {}  # per kind, the resourceVersion the table in force includes

    # ---- Component -------------------------------------------------------------------------------

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        if self._make_source is None:
            return
        self._node = node.name
        self._source = self._make_source()
        self._source.start(self._dirty.set)
        if not self._source.wait_synced(SYNC_TIMEOUT):
            self.error = f"the policy watches ({self._source.kind}) did not sync; policy waits for them"
        self.sync()  # before the agent says ready: the policy in force is the cluster's
        threading.Thread(target=self._loop, args=(stop,), name="policy", daemon=True).start()

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        self._dirty.set()  # a new or gone local pod (its CNI record) changes what this node enforces
        return [f"network policy: {self.error}"] if self.error else []

    def allow(self, source: Any) -> None:
        """A CNI ADD, its record saved and its veth not made yet: the new pod is policed from
        its first packet (its Pod object may not show its address yet; its record does)."""
        self.sync()

    def revoke(self, source: Any) -> None:
        self._dirty.set()  # a pod gone: its entries go with the next sync

    def annotate(self, event: dict[str, Any]) -> None:
        """A drop event of the policy table: its direction and the policies that isolate the pod."""
        reason = str(event.get("reason", ""))
        if not reason.startswith("policy-denied"):
            return
        ingress = reason.endswith("ingress")
        with self._lock:
            isolated = self.resolved.ingress_isolated if ingress else self.resolved.egress_isolated
        try:
            ip = ipaddress.ip_address(event.get("dst") if ingress else event.get("src"))
        except ValueError:
            return
        event["direction"] = "ingress" if ingress else "egress"
        event["policies"] = list(isolated.get(ip, []))

    def status(self) -> dict[str, Any]:
        with self._lock:
            return PolicyStatus(
                enabled=self._make_source is not None,
                source=self._source.kind if self._source else "",
                policies=self.policies,
                invalid=tuple(self.invalid),
                unresolved=tuple(self.resolved.unresolved),
                isolated_ingress=len(self.resolved.ingress_isolated),
                isolated_egress=len(self.resolved.egress_isolated),
                entries=len(self.resolved.ingress) + len(self.resolved.egress),
                applied_at=self.applied_at,
                covered=dict(self.covered),
                error=self.error,
            ).to_json()

    def stop(self) -> None:
        if self._source is not None:
            self._source.stop()

    # ---- the work ------------------------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._dirty.wait(1.0):
                stop.wait(SETTLE)
                self._dirty.clear()
                self.sync()
            elif time.monotonic() - self._checked > DRIFT_CHECK:
                self._checked = time.monotonic()
                self.check_drift()

    def check_drift(self) -> bool:
        """Put the table back if someone removed it (True then); without a policy there is none."""
        with self._lock:
            wanted = self._script is not None and self.policies > 0
        if not wanted or list_table(nft.TABLE, "inet") is not None:
            return False
        log.warning("network policy: table inet %s was removed behind podnet's back", nft.TABLE)
        self._script = None
        self.sync()
        return True

    def sync(self) -> None:
        """Resolve and apply (one at a time: the loop and a CNI ADD may both ask)."""
        if self._source is None:
            return
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        assert self._source is not None
        snap = self._source.snapshot()
        policies, invalid = parse_policies(snap.policies)
        records = list(self._local())
        local = {a.ip for r in records for a in r.addresses}
        pods = merge_local(snap.pods, records)
        if not self._source.publish(self._node, [p for p in pods if set(p.ips) & local]):
            threading.Timer(PUBLISH_RETRY, self._dirty.set).start()
        namespaces, covered = snap.namespaces, snap.covered
        mine = resolve(policies, pods, namespaces, local)  # only this node's pods are isolated here
        script = nft.render(mine, self._drop_events()) if policies else nft.remove()
        with self._lock:
            grew = bool(
                (set(mine.ingress_isolated) | set(mine.egress_isolated))
                - (set(self.resolved.ingress_isolated) | set(self.resolved.egress_isolated))
            )
            self.resolved, self.invalid, self.policies = mine, invalid, len(policies)
        if grew:
            self.before_apply()
        if script == self._script:
            self.covered = covered
            return
        self._guard()
        try:
            apply_script(script)
        except NftError as exc:
            self.error = f"nft rejected the policy table: {exc}"
            log.error("network policy: %s", self.error)
            return
        self._script, self.applied_at, self.error = script, time.time(), ""
        self.covered = covered
        isolated = len(set(mine.ingress_isolated) | set(mine.egress_isolated))
        entries = len(mine.ingress) + len(mine.egress)
        log.info("network policy: %d policies, %d local pod addresses isolated, %d entries",
                 len(policies), isolated, entries)  # fmt: skip

    # ---- for the API (podnet policy show) --------------------------------------------------------

    def explain(self, ip: Address) -> dict[str, Any]:
        """The rules in force for the local pod at ``ip``."""
        with self._lock:
            r = self.resolved
        return {
            "ingressIsolatedBy": r.ingress_isolated.get(ip, []),
            "egressIsolatedBy": r.egress_isolated.get(ip, []),
            "ingress": sorted(_entry(e) for e in r.ingress if ip in e.dst),
            "egress": sorted(_entry(e) for e in r.egress if ip in e.src),
        }

    def policed(self) -> set[Any]:
        """The node's pod addresses a policy isolates (either way): BPF host routing leaves their
        packets to the kernel's path, where this table is."""
        with self._lock:
            return set(self.resolved.ingress_isolated) | set(self.resolved.egress_isolated)


def _entry(e: Any) -> str:
    what = (
        "any"
        if e.protocol is None
        else f"{e.protocol}/{e.ports[0]}" + (f"-{e.ports[1]}" if e.ports[1] != e.ports[0] else "")
    )
    return f"{e.src} -> {e.dst} {what}"
