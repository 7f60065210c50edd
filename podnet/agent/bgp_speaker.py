"""The agent's BGP component: the speaker that announces the node's pod CIDRs (``podnet.bgp``)."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Sequence
from typing import Any

from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.model import NodeInfo

log = logging.getLogger("podnet.agent")


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
