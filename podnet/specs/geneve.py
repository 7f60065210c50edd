"""Geneve (RFC 8926) on UDP 6081, in eBPF. Its implementation: ``podnet.datapath.tunnels.geneve``."""

from podnet.registry import TUNNEL_PROTOCOLS
from podnet.specs.tunnel import TunnelSpec

GENEVE = TUNNEL_PROTOCOLS.describe(
    "geneve",
    TunnelSpec(
        name="geneve",
        display="Geneve",
        default_port=6081,
        wire_ports=(6081,),
        header=8,  # no options
        underlays=(4,),
        underlay_note="an IPv6 outer header needs a UDP checksum its eBPF programs do not compute",
        bpf_wire=0,
    ),
)
