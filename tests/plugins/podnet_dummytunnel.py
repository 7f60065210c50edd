"""A tunnel protocol from outside podnet's tree, loaded with ``PODNET_PLUGINS=podnet_dummytunnel``
(and this directory on ``PYTHONPATH``): the proof that a protocol is one spec plus one
implementation and nothing else in podnet names it.

``dummyvx`` carries frames in the kernel's VXLAN driver, but on its own device (``podnet_dvx``)
and UDP port 4790, with a display name of its own, and no eBPF header writer (``bpf_wire`` None):
BPF host routing hands its packets to the device.
"""

from __future__ import annotations

from typing import Any

from podnet.datapath.tunnels.base import TunnelEncap
from podnet.datapath.tunnels.vxlan import Vxlan
from podnet.registry import TUNNEL_PROTOCOLS
from podnet.specs.tunnel import TunnelSpec

NAME = "dummyvx"
DEVICE = "podnet_dvx"
PORT = 4790

SPEC = TUNNEL_PROTOCOLS.describe(
    NAME,
    TunnelSpec(name=NAME, display="DummyVX", default_port=PORT, wire_ports=(PORT,), header=8),
)


class DummyVx(Vxlan):
    spec = SPEC
    device = DEVICE

    def bpf_objects(self) -> tuple[tuple[str, str], ...]:
        return ()

    def host_routing_decap(self, ipr: Any, encap: TunnelEncap | None, devices: set[str]) -> list[str]:
        return []  # no receiving program: the device decapsulates

    def host_routing_decap_stats(self, ipr: Any) -> list[dict[str, Any]]:
        return []


TUNNEL_PROTOCOLS.register(NAME, DummyVx())
