"""Routing modes, registered by name: ``tunnel``, ``native`` and ``native+tunnelFallback``.

Each mode says which configs it plans for (``applies``); ``mode_for`` picks the one that does.
Adding a mode: one module with a class that satisfies ``base.RoutingMode`` and registers itself,
plus its import line here. Code outside the modes asks the mode (``tunnel``, ``needs_paths``,
``plan_peer``) instead of comparing ``routingMode`` values.
"""

from __future__ import annotations

from podnet.config import AgentConfig
from podnet.datapath.modes import hybrid, native, tunnel  # noqa: F401  (importing registers them)
from podnet.datapath.modes.base import RoutingMode
from podnet.registry import ROUTING_MODES

__all__ = ["RoutingMode", "mode_for", "routing_mode"]


def mode_for(config: AgentConfig) -> RoutingMode:
    """The one registered mode that plans for ``config``."""
    found: list[RoutingMode] = [m for m in ROUTING_MODES if m.applies(config)]
    if len(found) != 1:
        names = ", ".join(m.name for m in found) or "none"
        raise LookupError(f"routingMode={config.routing_mode}: {len(found)} routing modes apply ({names})")
    return found[0]


def routing_mode(name: str) -> RoutingMode:
    """The mode registered as ``name``; ``registry.UnknownChoice`` names the valid ones."""
    mode: RoutingMode = ROUTING_MODES.get(name)
    return mode
