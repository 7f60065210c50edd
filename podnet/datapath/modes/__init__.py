"""Routing modes, registered by their ``routingMode`` value (``tunnel``, ``native``).

Adding a mode means adding a module with a class that satisfies ``base.RoutingMode`` and one
line here; nothing else in podnet branches on the mode's name.
"""

from __future__ import annotations

from podnet.datapath.modes.base import RoutingMode
from podnet.datapath.modes.native import NativeMode
from podnet.datapath.modes.tunnel import TunnelMode

ROUTING_MODES: dict[str, RoutingMode] = {m.name: m for m in (TunnelMode(), NativeMode())}


def routing_mode(name: str) -> RoutingMode:
    """The mode registered as ``name``; KeyError names the valid choices."""
    try:
        return ROUTING_MODES[name]
    except KeyError:
        raise KeyError(
            f"unknown routing mode {name!r}: valid choices are {', '.join(sorted(ROUTING_MODES))}"
        ) from None
