"""The one interface a tunnel protocol supplies, and the device request node setup hands it.

A protocol states what differs between encapsulations and nothing else: the device it needs and
how to make it, the per-peer kernel entries beyond the tunnel mode's route and neighbour, its
per-packet overhead, its UDP port, how a capture recognises it on the wire and how diagnose reads
a device's underlay source. The tunnel routing mode, node setup, status, diagnose and capture ask
the protocol; nothing else in podnet matches on a protocol's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from podnet.datapath.objects import FdbEntry
from podnet.model import IPAddress


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


class TunnelProtocol(Protocol):
    """An encapsulation, registered under its ``tunnelProtocol`` value."""

    name: str  # the tunnelProtocol value: "vxlan"
    display: str  # how status and capture write it: "VXLAN"
    default_port: int
    wire_ports: tuple[int, ...]  # UDP ports a capture decodes as this protocol (default + IANA's)
    device: str  # podnet's device for it
    link_kind: str  # the kernel link kind of that device ("ip -d link" shows it)

    def overhead(self, underlay_family: int) -> int:
        """Bytes added to each packet over an IPv4 (4) or IPv6 (6) underlay."""
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
        """Per peer besides the route and the neighbour: VTEP MAC -> underlay address (VXLAN keeps
        it in the device's FDB, Geneve in its encap program's map)."""
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
        """Protocol facts for status (Geneve: its programs' map fill and counters)."""
        ...

    def device_local(self, link_msg: Any) -> IPAddress | None:
        """The underlay source address of an existing device of this kind (``ip -d link``)."""
        ...

    def inner_frame(self, payload: bytes) -> bytes | None:
        """The encapsulated Ethernet frame of a UDP payload, None when it is not this protocol."""
        ...
