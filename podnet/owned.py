"""Every number and name podnet owns in the kernel, in one place (Cilium's linux_defaults.go).

Marks let a restarted agent find its own objects and nothing else: routes and rules carry
``ROUTE_PROTOCOL``, devices the ``podnet_`` or ``lxc`` prefix, nft rules live in table ``podnet``.
Nothing without one of these marks is ever deleted by podnet. Anyone adding a route table, a rule
priority or a packet mark adds it here first, with a comment that says what it is for.

Route protocol 201 next to systemd-networkd (docs/datapath.md, "Route ownership"): networkd's
``ManageForeignRoutes=yes`` (its default) removes routes it did not make when it reconfigures a
link, whatever their protocol; Cilium uses ``proto kernel`` so that such managers take its routes
for the kernel's own. podnet keeps its own number, because "is this route mine?" must have one
answer that no other program shares, and the agent re-adds what a manager removed on its next
round (at most ``RESYNC_INTERVAL`` later). On a node run by networkd, set
``ManageForeignRoutes=no`` and ``ManageForeignRoutingPolicyRules=no`` in networkd.conf.
"""

import hashlib

# --- routes and rules -------------------------------------------------------------------------
ROUTE_PROTOCOL = 201  # "proto 201" on every route and rule podnet installs
MAIN_TABLE = 254  # the kernel's main table (RT_TABLE_MAIN): peer and endpoint routes live here
ENI_TABLE_BASE = 10  # ENI mode: table of the ENI with interface index i is ENI_TABLE_BASE + i
RULE_PRIORITY_TO_ENDPOINT = 20  # "pref 20: to <pod> lookup main" (ENI mode, Cilium's number)
RULE_PRIORITY_FROM_ENDPOINT = 111  # "pref 111: from <pod> lookup <ENI table>" (ENI mode)

# --- devices ----------------------------------------------------------------------------------
DEVICE_PREFIX = "podnet_"  # node-level devices
HOST_DEV = "podnet_host"  # carries the node's router IPs (one end of a veth pair)
NET_DEV = "podnet_net"  # the other end of that pair
VXLAN_DEV = "podnet_vxlan"
GENEVE_DEV = "podnet_geneve"
ENDPOINT_PREFIX = "lxc"  # host side of a pod's veth: lxc + 11 hex characters of the container ID
RETIRED_PREFIX = "lxz"  # a pod veth after DEL, until it is deleted: lxz + its ifindex in hex
RETIRED_GROUP = 0x706E647A  # link group of retired veths ("pndz"): one `ip link del group` deletes them
VXLAN_VNI = 1  # one overlay per cluster; peers are told apart by VTEP MAC (flannel's default)

# --- nftables ---------------------------------------------------------------------------------
NFT_TABLE = "podnet"  # "table ip podnet": masquerading
GUARD_TABLE = "podnet_guard"  # "table inet podnet_guard": what pods may send (podnet/datapath/guard.py)


def endpoint_host_ifname(container_id: str, ifname: str = "eth0") -> str:
    """The host-side veth name for a pod interface: stable, 14 characters, unique per attachment."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"{ENDPOINT_PREFIX}{digest[:11]}"
