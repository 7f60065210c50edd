"""The cluster-pool operator: give every registered node a pod CIDR, reclaim those of gone nodes,
on either datastore (``podnet.store.operatorstate.OperatorState``).

Level-triggered: a watch (and a periodic tick, for the grace period) wakes ``reconcile_once``,
which takes a snapshot, asks the pure planner (``plan.plan_pools``) and applies each step as one
conditional write against what the snapshot read, so two operators (or two reconciles racing)
can never give one CIDR twice and a node never ends up with two CIDRs of a family: a lost race
makes the operator plan again from a new snapshot.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from podnet.ipam.cidr import CIDRError, PoolSpec, parse_pool_spec
from podnet.model import IPNetwork
from podnet.operator.loop import serve
from podnet.operator.plan import DEFAULT_FENCE_SECONDS, GonePlan, PoolPlan, cidrs_by_node, plan_pools
from podnet.operator.serving import fail, serve_state, tick
from podnet.store.client import Store
from podnet.store.operatorstate import EtcdOperatorState, OperatorSnapshot, OperatorState

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig

log = logging.getLogger(__name__)

MAX_ROUNDS = 8  # re-plan at most this often per wake-up when writes lose races
STATUS_HEARTBEAT = 10.0  # the status is rewritten at least this often, so readers can tell its age


def apply_plan(state: OperatorState, snap: OperatorSnapshot, plan: PoolPlan, now: float) -> int:
    """Apply ``plan``; returns how many steps lost a race (the caller then re-plans)."""
    conflicts = 0
    held = cidrs_by_node(snap.pod_cidrs)
    new: dict[str, list[IPNetwork]] = {}
    for name, cidr in plan.assign:  # a dual-stack node gets both families in one write
        new.setdefault(name, []).append(cidr)
    for name, cidrs in new.items():
        every = tuple(sorted((*held.get(name, ()), *cidrs), key=lambda c: (c.version, c)))
        ok = state.assign(snap, name, every)
        for cidr in cidrs if ok else ():
            log.info("allocated pod CIDR %s to node %s", cidr, name)
        conflicts += not ok
    gone = GonePlan(plan.mark_gone, plan.clear_gone, plan.reclaim, plan.fenced)
    return conflicts + apply_gone(state, snap, gone, now)


def apply_gone(state: OperatorState, snap: OperatorSnapshot, gone: GonePlan, now: float) -> int:
    """Mark nodes gone, clear the mark of returned ones, free what nodes gone for the grace period
    hold; returns the conflicts."""
    conflicts = 0
    for name in gone.mark_gone:
        if state.mark_gone(snap, name, now):
            log.info("node %s is gone; its CIDRs are reclaimed after the grace period", name)
    for name in gone.clear_gone:
        conflicts += not state.clear_gone(snap, name)
    for name, cidrs in gone.reclaim:
        ok = state.reclaim(snap, name)
        if ok:
            log.info("reclaimed CIDRs %s of gone node %s", ", ".join(map(str, cidrs)), name)
        conflicts += not ok
    return conflicts


def pool_status(spec: PoolSpec, snap: OperatorSnapshot, plan: PoolPlan) -> dict[str, Any]:
    """What ``podnet status`` shows about the cluster pool (written to OPERATOR_STATUS_KEY)."""
    family = spec.pools[0].version
    allocated = sum(c.version == family for c in snap.pod_cidrs) + sum(
        c.version == family for _, c in plan.assign
    )
    status: dict[str, Any] = {
        "state": "ok",
        "message": f"{allocated} of {spec.capacity()} node subnets allocated ({spec.describe()})",
        "pools": [str(p) for p in spec.pools],
        "maskSize": spec.mask_size,
        "capacity": spec.capacity(),
        "allocated": allocated,
        "waitingNodes": list(plan.exhausted),
        "fenced": [{"node": n, "reason": why} for n, why in plan.fenced],
        "blocked": [{"cidr": str(c), "reason": why} for c, why in plan.blocked],
    }
    if plan.blocked:
        status["state"] = "warning"
        status["message"] += (
            f"; the pool overlaps the underlay: {', '.join(f'{c} {why}' for c, why in plan.blocked)}, "
            "never allocated; move the pool outside the node networks"
        )
    if plan.exhausted and allocated >= spec.capacity():  # this family's pool is the one that is full
        status["state"] = "exhausted"
        status["message"] = (
            f"cluster pool exhausted: all {spec.capacity()} node subnets of {spec.describe()} are "
            f"allocated; nodes without a pod CIDR: {', '.join(plan.exhausted)}; add a CIDR to "
            f"clusterPoolIPv{family}PodCIDRList (--cluster-pool-ipv{family}-cidr) or remove nodes that "
            "are gone"
        )
    return status


class ClusterPoolOperator:
    """One operator instance; ``reconcile_once()`` is the whole algorithm, ``run()`` the loop."""

    def __init__(
        self,
        state: OperatorState,
        spec: PoolSpec,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        spec6: PoolSpec | None = None,
    ) -> None:
        self.state = state
        self.spec = spec
        self.specs = (spec, spec6) if spec6 is not None else (spec,)  # dual-stack: a CIDR of each
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._last_status: dict[str, Any] | None = None
        self._last_written = 0.0
        self._warned: set[tuple[str, str]] = set()

    def reconcile_once(self) -> PoolPlan:
        plan = PoolPlan()
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = self.state.snapshot()
            plan = plan_pools(
                self.specs, snap.registered, snap.pod_cidrs, snap.gone_since, now, self.grace_seconds,
                snap.liveness, self.fence_seconds,
            )  # fmt: skip
            self._report(snap, plan)
            if plan.empty or apply_plan(self.state, snap, plan, now) == 0:
                break
        return plan

    def _report(self, snap: OperatorSnapshot, plan: PoolPlan) -> None:
        for req in plan.ignored_requests:
            if (req.node, str(req.cidr)) not in self._warned:
                self._warned.add((req.node, str(req.cidr)))
                log.warning(
                    "node %s requested pod CIDR %s: %s; allocating another", req.node, req.cidr, req.reason
                )
        status = pool_status(self.spec, snap, plan)
        if len(self.specs) > 1:
            status["ipv6"] = pool_status(self.specs[1], snap, plan)
        now = self.clock()
        if status == self._last_status and now - self._last_written < STATUS_HEARTBEAT:
            return
        if plan.exhausted:
            log.error("%s", status["message"])
        for name, why in plan.fenced:
            if ("fenced", name) not in self._warned:  # once per fence, not every round
                self._warned.add(("fenced", name))
                log.warning("node %s is gone but its pod CIDRs stay fenced: %s", name, why)
        self._warned -= {("fenced", n) for kind, n in set(self._warned) if kind == "fenced"} - {
            ("fenced", n) for n, _ in plan.fenced
        }
        waiting = {
            name: f"pool exhausted: {self.spec.describe()} has no free /{self.spec.mask_size}"
            for name in plan.exhausted
        }
        self.state.report_pool({**status, "updated": now, "heartbeat": STATUS_HEARTBEAT}, waiting)
        self._last_status, self._last_written = status, now

    def run(self, stop_event: threading.Event, tick: float) -> None:
        serve(self.reconcile_once, self.state, False, stop_event, tick, "cluster-pool")


def run_operator(
    store: Store,
    pools: Sequence[str] | PoolSpec,
    mask_size: int,
    grace_seconds: float,
    stop_event: threading.Event,
    clock: Callable[[], float] = time.time,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
    spec6: PoolSpec | None = None,
) -> None:
    """Run the cluster-pool operator on etcd until ``stop_event`` is set (blocking); with ``spec6``
    every node gets an IPv6 pod CIDR as well (dual stack)."""
    spec = pools if isinstance(pools, PoolSpec) else parse_pool_spec(pools, mask_size)
    tick = min(max(grace_seconds / 4.0, 0.2), 10.0)
    operator = ClusterPoolOperator(EtcdOperatorState(store), spec, grace_seconds, clock, fence_seconds, spec6)
    operator.run(stop_event, tick)


class ClusterPoolCli:
    """``podnet operator`` for cluster-pool (``operator.serving.ModeOperator``)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--cluster-pool-ipv4-cidr",
            action="append",
            help="cluster pool CIDR (repeat or comma-separate for several): clusterPoolIPv4PodCIDRList",
        )
        parser.add_argument("--cluster-pool-ipv4-mask-size", type=int, default=24, help="per-node mask size")
        parser.add_argument(
            "--cluster-pool-ipv6-cidr",
            action="append",
            help="dual stack: IPv6 pool CIDR(s), clusterPoolIPv6PodCIDRList (a CIDR of each family per node)",
        )
        parser.add_argument(
            "--cluster-pool-ipv6-mask-size",
            type=int,
            default=120,
            help="per-node IPv6 mask size (clusterPoolIPv6MaskSize)",
        )

    def config_argv(self, cfg: AgentConfig) -> list[str]:
        argv = []
        if cfg.enable_ipv4:
            argv += ipv4_pool_argv(cfg)
        if cfg.enable_ipv6:  # dual stack or IPv6-only: an IPv6 pod CIDR per node
            argv += ["--cluster-pool-ipv6-cidr", ",".join(str(c) for c in cfg.cluster_pool_ipv6_cidrs)]
            argv += ["--cluster-pool-ipv6-mask-size", str(cfg.cluster_pool_ipv6_mask_size)]
        return argv

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        pools = [c for item in args.cluster_pool_ipv4_cidr or [] for c in item.split(",") if c.strip()]
        pools6 = [c for item in args.cluster_pool_ipv6_cidr or [] for c in item.split(",") if c.strip()]
        if not pools and not pools6:
            return fail(
                "--cluster-pool-ipv4-cidr (or, for an IPv6-only cluster, "
                "--cluster-pool-ipv6-cidr) is required with --ipam cluster-pool"
            )
        try:
            spec6 = parse_pool_spec(pools6, args.cluster_pool_ipv6_mask_size, family=6) if pools6 else None
            spec = parse_pool_spec(pools, args.cluster_pool_ipv4_mask_size) if pools else spec6
        except CIDRError as exc:
            return fail(str(exc))
        assert spec is not None
        if spec is spec6:  # IPv6-only: the one pool is IPv6
            spec6 = None

        def run(state: OperatorState) -> None:
            grace, fence = args.grace_period, args.fence_period
            ClusterPoolOperator(state, spec, grace, fence_seconds=fence, spec6=spec6).run(stop, tick(args))

        return serve_state(args, run)


def ipv4_pool_argv(cfg: AgentConfig) -> list[str]:
    """``--cluster-pool-ipv4-cidr`` and its mask size, as ``cfg`` gives them."""
    pools, mask = ",".join(str(c) for c in cfg.cluster_pool_ipv4_cidrs), cfg.cluster_pool_ipv4_mask_size
    return ["--cluster-pool-ipv4-cidr", pools, "--cluster-pool-ipv4-mask-size", str(mask)]


OPERATOR = ClusterPoolCli()
