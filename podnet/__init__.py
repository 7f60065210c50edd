"""podnet: pod networking on the Linux kernel datapath (tunnels, native routing, BGP, IPAM)."""

__version__ = "0.1.0"
