"""VXLAN (RFC 7348): the kernel's driver on UDP 8472 (the Linux, flannel and Cilium default; IANA's
4789 is decoded too). Its implementation: ``podnet.datapath.tunnels.vxlan``."""

from podnet.registry import TUNNEL_PROTOCOLS
from podnet.specs.tunnel import TunnelSpec

VXLAN = TUNNEL_PROTOCOLS.describe(
    "vxlan",
    TunnelSpec(
        name="vxlan",
        display="VXLAN",
        default_port=8472,
        wire_ports=(8472, 4789),
        header=8,
        bpf_wire=1,
    ),
    default=True,
)
