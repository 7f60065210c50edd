"""Node-level devices, idempotent: the podnet_host/podnet_net veth pair and the tunnel device.

    ip link add podnet_host type veth peer name podnet_net        (both up)
    ip addr add <router ip>/32 dev podnet_host                      (one per pod CIDR)
    <the tunnel protocol's device: podnet.datapath.tunnels.<protocol>>
    sysctl net.ipv4.ip_forward=1 net.ipv4.conf.{all,podnet_*}.rp_filter=0
    <BIG TCP's GSO/GRO sizes on the underlay device: podnet.datapath.bigtcp>

The routing mode says whether the node tunnels and with which protocol; the protocol makes its
device. The VTEP MAC is derived from the node name, so a restarted agent keeps it and peers' neighbour
entries stay valid. The tunnel device is removed when the routing mode no longer tunnels. Only
``podnet_`` devices are created or removed; sysctls are written in the node's namespace only.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from podnet import owned
from podnet.config import AgentConfig
from podnet.datapath import mtu
from podnet.datapath.bigtcp import BigTcp, apply_big_tcp
from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import sysctl as ksysctl
from podnet.datapath.kernel.rtnl import Rtnl
from podnet.datapath.modes import mode_for
from podnet.datapath.tunnels import DeviceRequest, TunnelError, TunnelProtocol, all_protocols, tunnel_protocol
from podnet.datapath.tunnels import unsupported_reason as tunnel_unsupported
from podnet.model import IPAddress, NodeInfo


class NodeSetupError(RuntimeError):
    """The node cannot be set up as configured; the message says what to change."""


@dataclass(frozen=True)
class NodeDevices:
    """What node setup made: indexes for the reconciler and the VTEP MAC to publish."""

    underlay_dev: str
    underlay_index: int
    underlay_mtu: int
    host_index: int
    net_index: int
    tunnel_dev: str | None
    tunnel_index: int | None
    vtep_mac: str | None
    big_tcp: BigTcp = field(default_factory=BigTcp)  # the GSO/GRO sizes new pod veths get


def vtep_mac_for(node_name: str) -> str:
    """A stable, locally administered unicast MAC for the node's tunnel device."""
    raw = bytearray(hashlib.sha256(f"podnet-vtep/{node_name}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def node_sysctls(node: NodeInfo, tunnel_dev: str | None) -> dict[str, str]:
    """The sysctls podnet needs in the node namespace: forwarding, and loose reverse-path
    filtering on podnet's own devices (replies come back on a different device than they left)."""
    settings = {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "0"}
    for dev in (owned.HOST_DEV, owned.NET_DEV, tunnel_dev):
        if dev is not None:
            settings[f"net.ipv4.conf.{dev}.rp_filter"] = "0"
    if any(a.version == 6 for a in node.router_ips):
        settings["net.ipv6.conf.all.forwarding"] = "1"
        settings["net.ipv6.conf.all.proxy_ndp"] = "1"  # pods' gateways: proxy entries on their veths
    return settings


def setup_node(
    ipr: IPRoute,
    config: AgentConfig,
    node: NodeInfo,
    underlay_dev: str,
    netns: str | None = None,
    allow_initial_netns: bool = False,
    tunnel: bool | None = None,
) -> NodeDevices:
    """Create or fix the node's podnet devices. Sysctls go to the namespace ``ipr`` is bound to
    (``IPRoute(netns=...)``), else ``netns``, else the caller's own namespace - which is refused
    when that is the machine's initial namespace unless ``allow_initial_netns`` (a real node).
    Returns what the agent publishes (VTEP MAC) and what the planner needs (underlay MTU).
    ``tunnel`` overrides whether the tunnel device exists (default: whether the routing mode
    tunnels): a native node keeps the configured protocol's device while peers still send it
    encapsulated packets (live mode switches)."""
    ksysctl.refuse_initial_netns(ipr, "set up podnet devices", allow_initial_netns)
    bound = ksysctl.socket_netns(ipr)
    if bound and netns and bound != netns:
        raise NodeSetupError(f"netlink socket is bound to namespace {bound} but netns={netns} was given")
    netns = bound or netns
    underlay_index = klink.link_index(ipr, underlay_dev)
    if underlay_index is None:
        raise NodeSetupError(
            f"underlay device {underlay_dev} does not exist; set devices= to the node's uplink"
        )
    underlay_mtu = klink.link_mtu(ipr, underlay_index)
    host_index, net_index = klink.ensure_veth_pair(ipr, owned.HOST_DEV, owned.NET_DEV)
    _ensure_router_ips(ipr, host_index, node)
    protocol = wanted_tunnel(config, tunnel)
    tunnel_dev, tunnel_index, vtep_mac = _ensure_tunnel(
        ipr, config, node, underlay_index, underlay_mtu, protocol
    )
    ksysctl.ensure_sysctls(
        node_sysctls(node, tunnel_dev), netns=netns, allow_initial_netns=allow_initial_netns
    )
    with Rtnl.in_netns(netns) as sock:
        big_tcp = apply_big_tcp(
            sock, underlay_index, underlay_dev, config.enable_ipv4_big_tcp, config.enable_ipv6_big_tcp
        )
    return NodeDevices(
        underlay_dev=underlay_dev,
        underlay_index=underlay_index,
        underlay_mtu=underlay_mtu,
        host_index=host_index,
        net_index=net_index,
        tunnel_dev=tunnel_dev,
        tunnel_index=tunnel_index,
        vtep_mac=vtep_mac,
        big_tcp=big_tcp,
    )


def add_router_ips(ipr: IPRoute, router_ips: tuple[IPAddress, ...]) -> None:
    """Put new router IPs on podnet_host now, between rounds (a pod CIDR that IPAM just got):
    the node answers a pod's ARP for its gateway from the first packet. Only adds; the next round
    makes the set exact."""
    host_index, _ = klink.ensure_veth_pair(ipr, owned.HOST_DEV, owned.NET_DEV)
    for ip in router_ips:
        kaddr.ensure_addr(ipr, host_index, ipaddress.ip_interface(f"{ip}/{ip.max_prefixlen}"))


def _ensure_router_ips(ipr: IPRoute, host_index: int, node: NodeInfo) -> None:
    """Exactly the node's router IPs (host routes) on podnet_host; link-local ones are left alone."""
    wanted = {ipaddress.ip_interface(f"{a}/{a.max_prefixlen}") for a in node.router_ips}
    for address in wanted:
        kaddr.ensure_addr(ipr, host_index, address)
    for address in kaddr.addresses(ipr, host_index) - wanted:
        if not address.ip.is_link_local:
            kaddr.delete_addr(ipr, host_index, address)


def wanted_tunnel(config: AgentConfig, keep: bool | None = None) -> TunnelProtocol | None:
    """The protocol whose device the node needs: the mode's, or with ``keep`` the configured one."""
    protocol = mode_for(config).tunnel(config)
    if keep is None or (keep and protocol is not None):
        return protocol
    return tunnel_protocol(config.tunnel_protocol) if keep else None


def _ensure_tunnel(
    ipr: IPRoute,
    config: AgentConfig,
    node: NodeInfo,
    underlay_index: int,
    underlay_mtu: int,
    wanted: TunnelProtocol | None,
) -> tuple[str | None, int | None, str | None]:
    if wanted is not None:  # refuse before anything is deleted
        reason = tunnel_unsupported(wanted)
        if reason is not None:
            raise NodeSetupError(f"tunnelProtocol={reason}")
    for protocol in all_protocols():
        if protocol is not wanted:
            protocol.remove_device(ipr)
    if wanted is None:
        return None, None, None
    local = node.ipv6 if config.underlay_protocol == "ipv6" else (node.ipv4 or node.ipv6)
    if local is None:
        raise NodeSetupError(f"node {node.name} has no underlay address to use as the tunnel source")
    request = DeviceRequest(
        port=config.tunnel_port,
        local=local,
        underlay_index=underlay_index,
        mac=vtep_mac_for(node.name),
        mtu=mtu.tunnel_device_mtu(config, wanted, underlay_mtu, local.version),
    )
    try:
        return wanted.device, wanted.ensure_device(ipr, request), request.mac
    except TunnelError as exc:
        raise NodeSetupError(str(exc)) from None
