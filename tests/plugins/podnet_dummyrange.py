"""An IPAM mode with settings and an operator from outside podnet's tree, loaded with
``PODNET_PLUGINS=podnet_dummyrange`` (and this directory on ``PYTHONPATH``): the proof that such a
mode is docs/architecture.md's steps 1-4 (a spec, an allocator factory, a ``ModeSettings`` and a
``ModeOperator``) in one module, and nothing else in podnet names it.

``dummy-range``: the operator hands out one IPv4 CIDR of ``dummyRange.maskSize`` bits per node
out of ``dummyRange.cidr``, the highest free one first (so a node's CIDR shows it came from this
operator and not cluster-pool's), on etcd or Kubernetes alike through ``OperatorState``: every
write is conditional on the snapshot it was planned from, a lost race plans again. The CIDRs of a
node gone for the grace period are freed. Each agent hands out pod addresses inside its node's.
"""

from __future__ import annotations

import argparse
import ipaddress
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.config.errors import ConfigError
from podnet.config.modesettings import ModeSettings, Setting
from podnet.config.values import as_cidr, as_int
from podnet.ipam.base import IPAMContext, register_mode
from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.model import IPNetwork
from podnet.operator.loop import serve
from podnet.operator.serving import fail, serve_state, tick
from podnet.registry import IPAM_MODES
from podnet.specs.ipam import IpamSpec
from podnet.store.operatorstate import OperatorSnapshot, OperatorState

NAME = "dummy-range"
DEFAULT_CIDR = "10.244.128.0/17"
DEFAULT_MASK = 26
MAX_ROUNDS = 8  # re-plans per wake-up when writes lose races
HEARTBEAT = 10.0  # the status is rewritten at least this often

IPAM_MODES.describe(
    NAME,
    IpamSpec(
        NAME,
        "the operator hands out node CIDRs from dummyRange.cidr, the highest free one first",
        static_cidrs=True,
        operator=f"{__name__}:OPERATOR",
        settings=f"{__name__}:SETTINGS",
    ),
)


# ---- step 2: the agent's allocator ---------------------------------------------------------------


def node_cidrs(ctx: IPAMContext) -> MultiCIDRAllocator:
    """Pods get addresses of the CIDRs the operator gave the node (``spec.ipam.podCIDRs`` or the
    node's ``podcidrs`` key, whichever the datastore)."""
    return MultiCIDRAllocator(ctx.datastore.wait_pod_cidrs(ctx.node_name, ctx.wait_timeout))


register_mode(NAME, node_cidrs)


# ---- step 3: its settings ------------------------------------------------------------------------


def _mask(key: str, value: Any) -> int:
    return as_int(key, value, 8, 30)


def _conflicts(cfg: Any) -> list[tuple[str, str]]:
    cidr, mask = cfg.setting("dummy_range_cidr"), cfg.setting("dummy_range_mask_size")
    if mask <= cidr.prefixlen:
        return [("dummy_range_mask_size", f"{mask} must be longer than dummyRange.cidr's /{cidr.prefixlen}")]
    if cfg.enable_ipv6:
        return [("enable_ipv6", f"ipam.mode={NAME} hands out IPv4 CIDRs only; set ipv6.enabled=false")]
    return []


def _prefixes(cfg: Any, family: str, mask: int) -> list[tuple[IPNetwork, int, int]]:
    """Routers filtering pod routes accept the range's node CIDRs."""
    if family != "ipv4":
        return []
    size = cfg.setting("dummy_range_mask_size")
    return [(cfg.setting("dummy_range_cidr"), size, size)]


SETTINGS = ModeSettings(
    {
        "dummy_range_cidr": Setting(
            ("dummyRange.cidr", "dummy-range-cidr"), as_cidr, default=ipaddress.ip_network(DEFAULT_CIDR)
        ),
        "dummy_range_mask_size": Setting(
            ("dummyRange.maskSize", "dummy-range-mask-size"), _mask, default=DEFAULT_MASK
        ),
    },
    conflicts=_conflicts,
    prefixes=_prefixes,
)


# ---- step 4: its operator: a pure plan, conditional writes ---------------------------------------


@dataclass(frozen=True)
class RangePlan:
    assign: tuple[tuple[str, IPNetwork], ...] = ()  # node -> its new CIDR
    mark_gone: tuple[str, ...] = ()  # hold CIDRs, no longer registered
    clear_gone: tuple[str, ...] = ()  # marked gone, registered again
    reclaim: tuple[str, ...] = ()  # gone for the grace period: free what they hold
    waiting: tuple[str, ...] = ()  # need a CIDR, the range has none free

    @property
    def empty(self) -> bool:
        return not (self.assign or self.mark_gone or self.clear_gone or self.reclaim)


def plan_range(
    cidr: IPNetwork,
    mask: int,
    registered: set[str],
    held: Mapping[IPNetwork, str],
    gone_since: Mapping[str, float],
    now: float,
    grace: float,
) -> RangePlan:
    """What to write (pure): a free /mask of ``cidr``, highest first, for every registered node that
    holds none; gone marks and reclaims for the nodes that left."""
    holders = set(held.values())
    size = 1 << (cidr.max_prefixlen - mask)
    count = 1 << (mask - cidr.prefixlen)
    taken = set(held)
    free = (
        ipaddress.ip_network(f"{cidr.network_address + i * size}/{mask}") for i in range(count - 1, -1, -1)
    )
    assign, waiting = [], []
    for node in sorted(registered - holders):
        subnet = next((s for s in free if s not in taken), None)
        if subnet is None:
            waiting.append(node)
        else:
            assign.append((node, subnet))
    left = holders - registered
    return RangePlan(
        tuple(assign),
        tuple(sorted(n for n in left if n not in gone_since)),
        tuple(sorted(n for n in gone_since if n in registered)),
        tuple(sorted(n for n in left if n in gone_since and now - gone_since[n] >= grace)),
        tuple(waiting),
    )


class RangeOperator:
    def __init__(self, state: OperatorState, cidr: IPNetwork, mask: int, grace: float) -> None:
        self.state, self.cidr, self.mask, self.grace = state, cidr, mask, grace
        self._reported: tuple[dict[str, Any], float] = ({}, 0.0)

    def reconcile_once(self) -> RangePlan:
        plan = RangePlan()
        for _ in range(MAX_ROUNDS):
            now = time.time()
            snap = self.state.snapshot()
            plan = plan_range(
                self.cidr, self.mask, set(snap.registered), snap.pod_cidrs, snap.gone_since, now, self.grace
            )
            self._report(snap, plan, now)
            if plan.empty or self._apply(snap, plan, now) == 0:
                break
        return plan

    def _apply(self, snap: OperatorSnapshot, plan: RangePlan, now: float) -> int:
        """Each write conditional on ``snap``; returns how many lost a race."""
        lost = sum(not self.state.assign(snap, node, (cidr,)) for node, cidr in plan.assign)
        for node in plan.mark_gone:
            self.state.mark_gone(snap, node, now)
        lost += sum(not self.state.clear_gone(snap, node) for node in plan.clear_gone)
        return lost + sum(not self.state.reclaim(snap, node) for node in plan.reclaim)

    def _report(self, snap: OperatorSnapshot, plan: RangePlan, now: float) -> None:
        capacity = 1 << (self.mask - self.cidr.prefixlen)
        allocated = sum(c.version == 4 and c.subnet_of(self.cidr) for c in snap.pod_cidrs) + len(plan.assign)
        status = {
            "state": "exhausted" if plan.waiting else "ok",
            "message": f"{NAME}: {allocated} of {capacity} /{self.mask} of {self.cidr} allocated",
            "waitingNodes": list(plan.waiting),
        }
        last, written = self._reported
        if status == last and now - written < HEARTBEAT:
            return
        why = f"{NAME}: {self.cidr} has no free /{self.mask}"
        self.state.report_pool(
            {**status, "updated": now, "heartbeat": HEARTBEAT}, dict.fromkeys(plan.waiting, why)
        )
        self._reported = (status, now)


class RangeCli:
    """``podnet operator --ipam dummy-range`` (``operator.serving.ModeOperator``)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dummy-range-cidr", help=f"{NAME}: the range node CIDRs come from (dummyRange.cidr)"
        )
        parser.add_argument(
            "--dummy-range-mask-size", type=int, help=f"{NAME}: node CIDRs' mask size (dummyRange.maskSize)"
        )

    def config_argv(self, cfg: Any) -> list[str]:
        return [
            "--ipam", NAME,
            "--dummy-range-cidr", str(cfg.setting("dummy_range_cidr")),
            "--dummy-range-mask-size", str(cfg.setting("dummy_range_mask_size")),
        ]  # fmt: skip

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        mask = DEFAULT_MASK if args.dummy_range_mask_size is None else args.dummy_range_mask_size
        try:
            cidr = as_cidr("--dummy-range-cidr", args.dummy_range_cidr or DEFAULT_CIDR)
        except ConfigError as exc:
            return fail(str(exc))
        if not cidr.prefixlen < mask <= 30:
            return fail(
                f"--dummy-range-mask-size {mask}: must be longer than /{cidr.prefixlen} and at most 30"
            )

        def run(state: OperatorState) -> None:
            operator = RangeOperator(state, cidr, mask, args.grace_period)
            serve(operator.reconcile_once, state, False, stop, tick(args), NAME)

        return serve_state(args, run)


OPERATOR = RangeCli()
