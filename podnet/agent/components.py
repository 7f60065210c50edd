"""The agent's components: each has the same small life: ``start(node, stop)`` once the node is
known, ``after_round(node, round)`` after every applied round (returning errors for status),
``status()`` for the status document, and ``stop()``. The agent holds a list of them and knows
none of their insides. Here: the protocol, and masquerading (the others: ``pmtu_prober``,
``bgp_speaker``, ``reports``, ``pod_guard``, ``reaper``, ``host_routing``, ``eni_routing``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from podnet import owned
from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath.kernel.nft import NftError, apply_script, list_table
from podnet.datapath.masquerade import MasqueradePlan, replace_script
from podnet.model import NodeInfo

log = logging.getLogger("podnet.agent")

DRIFT_CHECK_INTERVAL = 10.0  # how often the masquerade table is checked for changes behind our back


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
