"""Routing modes' specs: the ``routingMode`` value each serves and how status names it."""

from __future__ import annotations

from dataclasses import dataclass

from podnet.registry import ROUTING_MODES


@dataclass(frozen=True)
class RoutingSpec:
    name: str  # the registry name (the agent's status says it as ``routing.modeName``)
    routing_mode: str  # the routingMode value it serves (the hybrid serves "native" too)
    display: str  # how status names it, in Cilium's words: "Tunnel [{protocol}]", "Native"
    tunnels: bool  # whether its pod traffic to other nodes (some of it) is encapsulated
    suffix: str = ""  # after autoDirectNodeRoutes in status: ", tunnel fallback [{protocol}]"

    def summary(self, protocol: str | None, auto_direct_node_routes: bool) -> str:
        """``Tunnel [<protocol>]``, ``Native, autoDirectNodeRoutes`` ... (what ``podnet status`` prints)."""
        text = self.display.format(protocol=protocol)
        if auto_direct_node_routes:
            text += ", autoDirectNodeRoutes"
        return text + self.suffix.format(protocol=protocol)


ROUTING_MODES.describe("tunnel", RoutingSpec("tunnel", "tunnel", "Tunnel [{protocol}]", True), default=True)
ROUTING_MODES.describe("native", RoutingSpec("native", "native", "Native", False))
ROUTING_MODES.describe(
    "native+tunnelFallback",
    RoutingSpec("native+tunnelFallback", "native", "Native", True, ", tunnel fallback [{protocol}]"),
)


def spec_of(routing: dict[str, object]) -> RoutingSpec:
    """The spec of the mode an agent's ``routing`` document names (``modeName``); an agent from
    before that field: the mode that serves its ``mode`` value, with a tunnel protocol or not."""
    name = routing.get("modeName")
    if isinstance(name, str) and name in ROUTING_MODES:
        found: RoutingSpec = ROUTING_MODES.spec(name)
        return found
    serving = [s for s in ROUTING_MODES.specs() if s.routing_mode == routing.get("mode")]
    with_tunnel = [s for s in serving if s.tunnels == bool(routing.get("tunnelProtocol"))]
    return (with_tunnel or serving or [ROUTING_MODES.spec(ROUTING_MODES.default())])[0]
