"""The marks podnet puts on what it owns in the kernel, so that a restart can find its orphans.

Routes carry ``ROUTE_PROTOCOL``; devices carry the ``podnet_`` or ``lxc`` prefix; nft rules live
in the table ``podnet``. Nothing without one of these marks is ever deleted by podnet.
"""

ROUTE_PROTOCOL = 201  # "proto 201" in `ip route`; named "podnet" in docs/architecture.md
HOST_DEV = "podnet_host"  # carries the node's router IPs (one end of a veth pair)
NET_DEV = "podnet_net"  # the other end of that pair
VXLAN_DEV = "podnet_vxlan"
GENEVE_DEV = "podnet_geneve"
ENDPOINT_PREFIX = "lxc"  # host side of a pod's veth: lxc + 11 hex characters of the container ID
NFT_TABLE = "podnet"


def endpoint_host_ifname(container_id: str, ifname: str = "eth0") -> str:
    """The host-side veth name for a pod interface: stable, 14 characters, unique per attachment."""
    import hashlib

    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"{ENDPOINT_PREFIX}{digest[:11]}"
