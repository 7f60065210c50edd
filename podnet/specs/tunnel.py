"""A tunnel protocol's spec: what everything outside its own modules needs to know about it.

A protocol is its spec (here, one module per protocol registered with
``TUNNEL_PROTOCOLS.describe``) plus its implementation (``podnet.datapath.tunnels``: the device,
the per-peer entries, its eBPF parts). From the spec alone:

- config validates ``tunnelProtocol`` and the underlay family, and fills ``tunnelPort``;
- the route MTU takes its overhead;
- the pod guard closes its ports to pods;
- status, diagnose and capture print it as ``<display> (UDP <port>)`` and find the inner packet;
- ``podnet diagnose --follow`` traces packets at the depth its header puts them;
- BPF host routing writes the header itself when the protocol has a ``bpf_wire`` format.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from podnet.registry import TUNNEL_PROTOCOLS

UDP_HEADER = 8
ETHERNET_HEADER = 14
OUTER_IP = {4: 20, 6: 40}


@dataclass(frozen=True)
class TunnelSpec:
    name: str  # the tunnelProtocol value
    display: str  # how status, capture and diagnose write it
    default_port: int  # tunnelPort when the config names none
    wire_ports: tuple[int, ...]  # UDP ports a capture decodes as this protocol; the guard closes them
    header: int  # the protocol's own header after the outer UDP header (the inner Ethernet frame follows)
    underlays: tuple[int, ...] = (4, 6)  # underlay families it runs over
    underlay_note: str = ""  # why a family is missing from ``underlays``
    bpf_wire: int | None = None  # its value of ``enum tun_wire`` (bpf/encap.h) when BPF can write it

    def overhead(self, underlay_family: int) -> int:
        """Bytes each packet gains over an IPv4 (4) or IPv6 (6) underlay."""
        return OUTER_IP[underlay_family] + UDP_HEADER + self.header + ETHERNET_HEADER

    @property
    def inner_offset(self) -> int:
        """Bytes from the start of the outer UDP header to the inner IP header."""
        return UDP_HEADER + self.header + ETHERNET_HEADER

    def label(self, port: int | None = None) -> str:
        """``<display> (UDP <port>)``."""
        return f"{self.display} (UDP {port or self.default_port})"

    def underlay_problem(self, underlay_family: int) -> str | None:
        """Why this protocol cannot run over that underlay family, with what to use instead."""
        if underlay_family in self.underlays:
            return None
        carriers = [s.name for s in specs() if underlay_family in s.underlays]
        instead = (
            f"use tunnelProtocol={carriers[0]} with underlayProtocol=ipv{underlay_family}"
            if carriers
            else "use routingMode=native"
        )
        only = " or ".join(f"IPv{f}" for f in self.underlays)
        return f"{self.name} runs over an {only} underlay only ({self.underlay_note}); {instead}"


def spec(name: str) -> TunnelSpec:
    """The spec of ``name``; ``registry.UnknownChoice`` names the valid ones."""
    found: TunnelSpec = TUNNEL_PROTOCOLS.spec(name)
    return found


def specs() -> tuple[TunnelSpec, ...]:
    return tuple(TUNNEL_PROTOCOLS.specs())


def default_name() -> str:
    return TUNNEL_PROTOCOLS.default()


def default_port() -> int:
    return spec(default_name()).default_port


def label(name: str | None, port: int | None = None) -> str:
    """``<display> (UDP <port>)`` for a tunnelProtocol value; the value itself when nothing
    describes it."""
    if not name:
        return ""
    try:
        return spec(name).label(port)
    except KeyError:
        return f"{name} (UDP {port})" if port else name


def guard_ports() -> tuple[int, ...]:
    """Every UDP port any described protocol uses: pods may send to none of them."""
    return tuple(sorted({p for s in specs() for p in (s.default_port, *s.wire_ports)}))


def inner_offsets(extra: Iterable[int] = ()) -> tuple[int, ...]:
    """The distinct depths of an inner IP header behind an outer UDP header, over every protocol."""
    return tuple(sorted({s.inner_offset for s in specs()} | set(extra)))
