"""Routing modes, registered by their ``routingMode`` value (``tunnel``, ``native``).

Adding a mode means adding a module with a class that satisfies ``base.RoutingMode`` and one
line here; nothing else in podnet branches on the mode's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from podnet.datapath.modes.base import RoutingMode
from podnet.datapath.modes.hybrid import HybridMode
from podnet.datapath.modes.native import NativeMode
from podnet.datapath.modes.tunnel import TunnelMode

if TYPE_CHECKING:
    from podnet.config import AgentConfig

ROUTING_MODES: dict[str, RoutingMode] = {m.name: m for m in (TunnelMode(), NativeMode())}
HYBRID = HybridMode()


def mode_for(config: AgentConfig) -> RoutingMode:
    """The mode that plans for ``config``: its routingMode, or the hybrid for native + tunnelFallback."""
    if config.routing_mode == "native" and config.tunnel_fallback:
        return HYBRID
    return routing_mode(config.routing_mode)


def routing_mode(name: str) -> RoutingMode:
    """The mode registered as ``name``; KeyError names the valid choices."""
    try:
        return ROUTING_MODES[name]
    except KeyError:
        raise KeyError(
            f"unknown routing mode {name!r}: valid choices are {', '.join(sorted(ROUTING_MODES))}"
        ) from None
