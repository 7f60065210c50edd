"""podnet: pod networking on the Linux kernel datapath (VXLAN tunnel, native routing, BGP, IPAM)."""

__version__ = "0.1.0"
