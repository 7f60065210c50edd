"""The one interface a tunnel protocol's implementation supplies, and what node setup and BPF
host routing hand it.

A protocol is its spec (``podnet.specs.tunnel.TunnelSpec``: name, port, overhead, header depth,
BPF wire format, underlay families) and this implementation: the device it needs and how to make
it, the per-peer kernel entries beyond the tunnel mode's route and neighbour, how a capture finds
the inner frame and how diagnose reads a device's underlay source, its eBPF objects, and what it
adds on the receiving side when BPF host routing encapsulates for it. The tunnel routing mode,
node setup, BPF host routing, status, diagnose and capture ask the protocol; nothing else in
podnet matches on a protocol's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from podnet.datapath.objects import FdbEntry
from podnet.model import IPAddress
from podnet.specs.tunnel import TunnelSpec


class TunnelError(RuntimeError):
    """The tunnel device cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class DeviceRequest:
    """What node setup knows when it asks a protocol for its device."""

    port: int
    local: IPAddress  # the node's underlay address: the outer source
    underlay_index: int
    mac: str  # the node's VTEP MAC, stable across restarts
    mtu: int


@dataclass(frozen=True)
class TunnelEncap:
    """How BPF host routing encapsulates for other nodes (what the tunnel device would do)."""

    device: str  # the tunnel device the kernel's routes to peers use
    wire: str  # the protocol's name (its spec's ``bpf_wire`` is what the program is told)
    local: ipaddress.IPv4Address
    port: int
    vni: int
    peers: tuple[tuple[str, ipaddress.IPv4Address], ...]  # (peer VTEP MAC, its underlay address)


class Described:
    """The spec's facts as attributes of the implementation (``protocol.display`` ...)."""

    spec: TunnelSpec
    peer_entry = "FDB entry"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def display(self) -> str:
        return self.spec.display

    @property
    def default_port(self) -> int:
        return self.spec.default_port

    @property
    def wire_ports(self) -> tuple[int, ...]:
        return self.spec.wire_ports

    def overhead(self, underlay_family: int) -> int:
        return self.spec.overhead(underlay_family)

    def bpf_objects(self) -> tuple[tuple[str, str], ...]:
        return ()

    def host_routing_decap(self, ipr: Any, encap: TunnelEncap | None, devices: set[str]) -> list[str]:
        return []

    def host_routing_decap_stats(self, ipr: Any) -> list[dict[str, Any]]:
        return []


class TunnelProtocol(Protocol):
    """An encapsulation, registered under its ``tunnelProtocol`` value."""

    spec: TunnelSpec
    name: str  # the tunnelProtocol value (the spec's)
    display: str  # how status and capture write it (the spec's)
    default_port: int
    wire_ports: tuple[int, ...]  # UDP ports a capture decodes as this protocol
    device: str  # podnet's device for it
    link_kind: str  # the kernel link kind of that device ("ip -d link" shows it)
    peer_entry: str  # what diagnose calls one per-peer entry: "FDB entry", "peer map entry"

    def overhead(self, underlay_family: int) -> int:
        """Bytes added to each packet over an IPv4 (4) or IPv6 (6) underlay."""
        ...

    def bpf_objects(self) -> tuple[tuple[str, str], ...]:
        """(source, variant) of every eBPF object it may attach (the image prebuilds them)."""
        ...

    def host_routing_decap(self, ipr: Any, encap: TunnelEncap | None, devices: set[str]) -> list[str]:
        """BPF host routing encapsulates for this protocol (``encap``; None: it does not): what
        the receiving side needs on the underlay ``devices`` beyond the protocol's own device
        (its own decap program); returns what changed. Called for every protocol each round."""
        ...

    def host_routing_decap_stats(self, ipr: Any) -> list[dict[str, Any]]:
        """Status of what ``host_routing_decap`` attached: program, dev, allowed, counters."""
        ...

    def unsupported_reason(self, has_link_kind: Callable[[str], bool]) -> str | None:
        """Why this kernel cannot carry the protocol (None when it can)."""
        ...

    def ensure_device(self, ipr: Any, request: DeviceRequest) -> int:
        """The tunnel device as ``request`` says, up; its index. Idempotent."""
        ...

    def remove_device(self, ipr: Any) -> bool:
        """Remove the device and whatever else the protocol attached; True when something went."""
        ...

    def peer_entries(self, dev: str, vtep_mac: str, underlay_ip: IPAddress) -> tuple[FdbEntry, ...]:
        """Per peer besides the route and the neighbour: VTEP MAC -> underlay address (a device's
        FDB, or an encap program's map)."""
        ...

    def dump_peers(self, ipr: Any, index: int, dev: str) -> list[FdbEntry]:
        """The peer entries the protocol holds now (what the reconciler diffs against)."""
        ...

    def set_peer(self, ipr: Any, index: int, entry: FdbEntry) -> None:
        """Add or replace one peer entry, without reading first."""
        ...

    def delete_peer(self, ipr: Any, index: int, entry: FdbEntry) -> bool:
        """Remove one peer entry; False when it was not there."""
        ...

    def stats(self, ipr: Any) -> dict[str, Any]:
        """Protocol facts for status (eBPF protocols: their programs' map fill and counters)."""
        ...

    def device_local(self, link_msg: Any) -> IPAddress | None:
        """The underlay source address of an existing device of this kind (``ip -d link``)."""
        ...

    def inner_frame(self, payload: bytes) -> bytes | None:
        """The encapsulated Ethernet frame of a UDP payload, None when it is not this protocol."""
        ...
