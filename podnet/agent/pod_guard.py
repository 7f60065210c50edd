"""The pod guard as an agent component (the table: ``podnet.datapath.guard``), and the hooks a
CNI ADD/DEL calls at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from podnet import owned
from podnet.agent.components import NftTable
from podnet.agent.round import RoundPlan
from podnet.datapath.guard import TABLE as GUARD_TABLE_SPEC
from podnet.datapath.guard import (
    EndpointSource,
    GuardPlan,
    add_endpoint_script,
    delete_endpoint_script,
)
from podnet.datapath.guard import apply_script as guard_script
from podnet.datapath.kernel.nft import NftError, apply_script, list_table
from podnet.model import NodeInfo

log = logging.getLogger("podnet.agent")


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


class EndpointHooks:
    """Several endpoint hooks as one (the CNI handler's ``guard``): the pod guard, policy, the IPAM mode's
    component (its rules for the pod), BPF host routing, in that order."""

    def __init__(self, *hooks: Any) -> None:
        self._hooks = hooks

    def allow(self, source: EndpointSource) -> None:
        for hook in self._hooks:
            hook.allow(source)

    def revoke(self, source: EndpointSource) -> None:
        for hook in self._hooks:
            hook.revoke(source)
