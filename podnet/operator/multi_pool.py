"""The multi-pool operator (``podnet operator --ipam multi-pool``), on either datastore: the pure
plan (``multi_plan.plan_multi_pool``) over the pools and the nodes' requests of an
``OperatorSnapshot``.

Design fact: a node's allocation is written conditionally on the request and allocation it was
planned from, so an agent that changed its request meanwhile, or a second operator, makes the
write fail and the operator plans again; a restarted operator reads everything back and loses
nothing. A node that left the cluster keeps its CIDRs for the grace period (and the fence of a
node that last reported pods), as in cluster-pool; then they are freed. Each node learns why a
request is not met (what its agent's ADD waits for), each pool which nodes use it or why it is
refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from podnet.config.multi_pool import auto_create_arg
from podnet.ipam.multi_pool_model import PoolDef, parse_pool
from podnet.model import IPNetwork
from podnet.operator.cluster_pool import MAX_ROUNDS, apply_gone, ipv4_pool_argv
from podnet.operator.loop import serve
from podnet.operator.multi_plan import MultiPoolPlan, node_pools_of, plan_multi_pool
from podnet.operator.plan import DEFAULT_FENCE_SECONDS, plan_gone
from podnet.operator.serving import fail, serve_state, tick
from podnet.store.operatorstate import OperatorSnapshot, OperatorState

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig

log = logging.getLogger(__name__)


def pool_defs(snap: OperatorSnapshot) -> tuple[list[PoolDef], dict[str, str]]:
    """The pools in creation order, and those that cannot be read (name -> why)."""
    found, invalid = [], {}
    for pool in snap.pools:
        try:
            found.append(parse_pool(pool.name, pool.spec))
        except ValueError as exc:
            invalid[pool.name] = str(exc)
    return found, invalid


class MultiPoolOperator:
    def __init__(
        self,
        state: OperatorState,
        grace_seconds: float,
        clock: Callable[[], float] = time.time,
        fence_seconds: float = DEFAULT_FENCE_SECONDS,
        auto_create: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``auto_create``: pools to create when missing (Cilium's autoCreateCiliumPodIPPools);
        an existing pool of that name is left as it is."""
        self.state = state
        self.grace_seconds = grace_seconds
        self.fence_seconds = fence_seconds
        self.clock = clock
        self._to_create = dict(auto_create or {})

    def _create_pools(self) -> None:
        for name, spec in list(self._to_create.items()):
            if self.state.create_pool(name, spec, self.clock()):
                log.info("created IP pool %s (autoCreatePodIPPools)", name)
            del self._to_create[name]

    def reconcile_once(self) -> MultiPoolPlan | None:
        self._create_pools()
        plan = None
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            snap = self.state.snapshot(pools=True)
            pools, invalid = pool_defs(snap)
            fields = {name: node_pools_of(spec) for name, spec in snap.node_pools.items()}
            plan = plan_multi_pool(pools, invalid, fields, snap.registered)
            conflicts = sum(not self._write_node(snap, plan, name) for name in sorted(fields))
            held = {n: tuple(c for cs in f.allocated.values() for c in cs) for n, f in fields.items()}
            gone = plan_gone(
                {n: c for n, c in held.items() if c}, snap.registered, snap.gone_since, now,
                self.grace_seconds, snap.liveness, self.fence_seconds,
            )  # fmt: skip
            conflicts += apply_gone(self.state, snap, gone, now)
            self._report_pools(snap, plan)
            if conflicts == 0:
                break
        return plan

    def _write_node(self, snap: OperatorSnapshot, plan: MultiPoolPlan, name: str) -> bool:
        """The node's allocation (if the plan changed it) and errors; False when a race was lost."""
        held = plan.allocated.get(name)
        allocated = (
            None
            if held is None
            else [{"pool": p, "cidrs": [str(c) for c in cidrs]} for p, cidrs in sorted(held.items())]
        )
        errors = plan.errors.get(name, {})
        if not self.state.set_node_pools(snap, name, allocated, errors):
            return False
        before = node_pools_of(snap.node_pools.get(name)).allocated
        _log_changes(name, before, held or before)
        reported = snap.node_pool_errors.get(name, {})
        for pool, error in errors.items():
            if not reported.get(pool):  # once when it starts, not at every change of the counts
                log.error("node %s, pool %s: %s", name, pool, error)
        return True

    def _report_pools(self, snap: OperatorSnapshot, plan: MultiPoolPlan) -> None:
        for pool in snap.pools:
            using = sorted(plan.pool_nodes.get(pool.name, {}).items())
            nodes = {n: [str(c) for c in cidrs] for n, cidrs in using}
            error = plan.pool_errors.get(pool.name) or None
            if (pool.status.get("error") or None) == error and (pool.status.get("nodes") or {}) == nodes:
                continue
            self.state.set_pool_status(pool, {"error": error, "nodes": nodes})
            if error and error != pool.status.get("error"):
                log.error("%s", error)

    def run(self, stop_event: threading.Event, tick: float) -> None:
        serve(self.reconcile_once, self.state, True, stop_event, tick, "multi-pool")


def _log_changes(
    name: str, before: Mapping[str, tuple[IPNetwork, ...]], after: Mapping[str, tuple[IPNetwork, ...]]
) -> None:
    for pool, cidrs in after.items():
        for cidr in sorted(set(cidrs) - set(before.get(pool, ())), key=_order):
            log.info("allocated CIDR %s of pool %s to node %s", cidr, pool, name)
        for cidr in sorted(set(before.get(pool, ())) - set(cidrs), key=_order):
            log.info("node %s gave back CIDR %s of pool %s", name, cidr, pool)


def _order(cidr: IPNetwork) -> tuple[int, IPNetwork]:
    return cidr.version, cidr


class MultiPoolCli:
    """``podnet operator --ipam multi-pool`` (``operator.serving.ModeOperator``)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--auto-create-pod-ip-pools",
            help='multi-pool: pools to create when missing, as JSON: {"default": {"ipv4": {"cidrs": '
            '["10.10.0.0/16"], "maskSize": 24}}} (autoCreateCiliumPodIPPools)',
        )

    def config_argv(self, cfg: AgentConfig) -> list[str]:
        """The cluster pool (which the default pool covers), and the pools to create."""
        pools, mask = [str(c) for c in cfg.cluster_pool_ipv4_cidrs], cfg.cluster_pool_ipv4_mask_size
        auto = auto_create_arg(cfg.setting("auto_create_pod_ip_pools"), pools, mask)
        return [*ipv4_pool_argv(cfg), "--ipam", "multi-pool", "--auto-create-pod-ip-pools", auto]

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        try:
            auto = json.loads(args.auto_create_pod_ip_pools) if args.auto_create_pod_ip_pools else {}
            for name, spec in auto.items():
                parse_pool(name, spec)
        except (ValueError, AttributeError) as exc:
            return fail(f"--auto-create-pod-ip-pools: {exc}")

        def run(state: OperatorState) -> None:
            grace, fence = args.grace_period, args.fence_period
            MultiPoolOperator(state, grace, fence_seconds=fence, auto_create=auto).run(stop, tick(args))

        return serve_state(args, run)


OPERATOR = MultiPoolCli()
