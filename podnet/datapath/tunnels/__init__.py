"""Tunnel protocols' implementations, registered by their ``tunnelProtocol`` value.

Adding a protocol: its spec (``podnet/specs/<name>.py`` and a line in ``podnet/specs/tunnels.py``)
and one module here with a class that satisfies ``base.TunnelProtocol`` and registers itself,
plus its import line below (an out-of-tree protocol: one module named in ``PODNET_PLUGINS``).
"""

from __future__ import annotations

from collections.abc import Callable

from podnet.datapath.tunnels import geneve, vxlan  # noqa: F401  (importing registers them)
from podnet.datapath.tunnels.base import DeviceRequest, TunnelEncap, TunnelError, TunnelProtocol
from podnet.registry import TUNNEL_PROTOCOLS

__all__ = [
    "DeviceRequest",
    "TunnelEncap",
    "TunnelError",
    "TunnelProtocol",
    "all_protocols",
    "tunnel_of",
    "tunnel_protocol",
    "unsupported_reason",
]


def tunnel_protocol(name: str) -> TunnelProtocol:
    """The protocol registered as ``name``; ``registry.UnknownChoice`` names the valid ones."""
    protocol: TunnelProtocol = TUNNEL_PROTOCOLS.get(name)
    return protocol


def all_protocols() -> tuple[TunnelProtocol, ...]:
    return tuple(TUNNEL_PROTOCOLS)


def tunnel_of(name: str | None, kind: str | None) -> TunnelProtocol | None:
    """The protocol whose device is ``name`` of link kind ``kind`` (``ip -d link``), if any: a
    device is a tunnel by both (an eBPF protocol's device may be a veth, like every pod's)."""
    return next((p for p in all_protocols() if kind and p.link_kind == kind and p.device == name), None)


def unsupported_reason(
    protocol: TunnelProtocol, has_link_kind: Callable[[str], bool] | None = None
) -> str | None:
    """Why this kernel cannot carry ``protocol``, with what to use instead; None when it can.
    ``has_link_kind`` defaults to ``podnet.datapath.kernel.link.link_kind_supported``."""
    if has_link_kind is None:
        from podnet.datapath.kernel.link import link_kind_supported

        has_link_kind = link_kind_supported
    reason = protocol.unsupported_reason(has_link_kind)
    if reason is None:
        return None
    others = [
        p.name
        for p in all_protocols()
        if p.name != protocol.name and p.unsupported_reason(has_link_kind) is None
    ]
    instead = f"use tunnelProtocol={others[0]}" if others else "use routingMode=native"
    return f"{protocol.name!r} {reason}; {instead}"
