"""The lab's VPC "hypervisor": EC2's state (moto's) turned into kernel state, as AWS's network does.

Each attached ENI is a veth: ``eth<DeviceIndex>`` with the ENI's MAC inside the instance's
namespace, and port ``e<12 hex of the ENI ID>`` on the VPC router (namespace ``pn-<lab>-vpc``).
The router holds every subnet's ``.1`` (on its loopback), answers every ARP question on a port
(proxy ARP, no delay), and delivers each address assigned to an ENI by a ``/32`` route and a
permanent neighbour entry to that ENI's MAC: AssignPrivateIpAddresses makes an address reachable,
Unassign and Detach take it away. A new ENI other than eth0 appears down at MTU 1500, as a
hot-plugged NIC does; eth0 is configured like cloud-init would (address, MTU 9001, default route).

What the VPC enforces, in one nft table on the router (``table ip vpc``):
- the source/destination check: a packet entering from an ENI with a source address that ENI
  does not own is dropped (counted per ENI);
- security groups: what may be forwarded *to* an ENI is what one of its groups' ingress rules
  allows (stateful: replies always pass); everything leaving an ENI is allowed (AWS's default
  egress rule);
- the internet gateway: VPC addresses leaving to the internet network are NATed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel.sysctl import ensure_sysctls
from podnet.lab import wire

log = logging.getLogger("podnet.lab.vpc")

PORT_PREFIX = "e"
VPC_MTU = 9001
HOTPLUG_MTU = 1500
NFT_TABLE = "vpc"
ROUTE_PROTO = 4  # "proto static": the VPC's own routes to ENI addresses


def port_name(eni_id: str) -> str:
    return PORT_PREFIX + eni_id.rsplit("-", 1)[-1][-12:]


@dataclass(frozen=True)
class Port:
    """One attached ENI as the VPC wires it."""

    name: str
    eni_id: str
    host: str
    index: int
    mac: str
    primary: ipaddress.IPv4Interface
    addresses: tuple[ipaddress.IPv4Address, ...]  # primary first
    groups: tuple[str, ...]

    @property
    def ifname(self) -> str:
        return f"eth{self.index}"

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.primary.network.network_address + 1


def plan_ports(
    enis: Iterable[Mapping[str, Any]], hosts: Mapping[str, str], subnets: Mapping[str, ipaddress.IPv4Network]
) -> list[Port]:
    """Ports for every ENI attached to an instance of the lab (``hosts``: instance ID -> host)."""
    ports = []
    for eni in enis:
        attachment = eni.get("Attachment") or {}
        host = hosts.get(str(attachment.get("InstanceId", "")))
        if host is None or attachment.get("Status", "attached") not in ("attached", "attaching"):
            continue
        cidr = subnets.get(str(eni.get("SubnetId")))
        if cidr is None:
            continue
        primary = ipaddress.IPv4Address(eni["PrivateIpAddress"])
        others = [ipaddress.IPv4Address(p["PrivateIpAddress"]) for p in eni.get("PrivateIpAddresses") or []]
        addresses = (primary, *sorted(a for a in set(others) if a != primary))
        ports.append(
            Port(
                name=port_name(eni["NetworkInterfaceId"]),
                eni_id=eni["NetworkInterfaceId"],
                host=host,
                index=int(attachment.get("DeviceIndex", 0)),
                mac=str(eni["MacAddress"]).lower(),
                primary=ipaddress.IPv4Interface(f"{primary}/{cidr.prefixlen}"),
                addresses=addresses,
                groups=tuple(sorted(g["GroupId"] for g in eni.get("Groups") or [])),
            )
        )
    return sorted(ports, key=lambda p: (p.host, p.index))


def _match(perm: Mapping[str, Any]) -> str:
    proto = str(perm.get("IpProtocol", "-1"))
    if proto in ("-1", "all"):
        return ""
    if proto == "icmp":
        return "ip protocol icmp"
    low, high = perm.get("FromPort", 0), perm.get("ToPort", 65535)
    ports = str(low) if low == high else f"{low}-{high}"
    return f"meta l4proto {proto} th dport {ports}"


def _elements(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def render_nft(
    ports: Sequence[Port],
    permissions: Mapping[str, Sequence[Mapping[str, Any]]],
    vpc_cidr: ipaddress.IPv4Network,
    igw_ifname: str,
) -> str:
    """The VPC's table: source checks, security groups, the internet gateway's NAT."""
    members: dict[str, list[ipaddress.IPv4Address]] = {}
    for p in ports:
        for g in p.groups:
            members.setdefault(g, []).extend(p.addresses)
    forward = ["    type filter hook forward priority filter; policy accept;"]
    chains = []
    for p in ports:
        forward.append(
            f'    iifname "{p.name}" ip saddr != {_elements(p.addresses)} counter drop '
            f'comment "source check {p.eni_id} {p.host}/{p.ifname}"'
        )
    forward.append("    ct state established,related accept")
    for p in ports:
        forward.append(f'    oifname "{p.name}" jump sg_{p.name}')
        rules = []
        for group in p.groups:
            for perm in permissions.get(group, ()):
                match = _match(perm)
                sources = [r["CidrIp"] for r in perm.get("IpRanges") or []]
                for pair in perm.get("UserIdGroupPairs") or []:
                    sources += [str(a) for a in members.get(pair["GroupId"], [])]
                if sources:
                    condition = " ".join(x for x in (f"ip saddr {_elements(sources)}", match) if x)
                    rules.append(f'    {condition} accept comment "{group}"')
        rules.append(f'    counter drop comment "security groups of {p.eni_id} {p.host}/{p.ifname}"')
        chains.append(f"  chain sg_{p.name} {{\n" + "\n".join(rules) + "\n  }")
    lines = [
        f"table ip {NFT_TABLE} {{",
        "  chain forward {",
        *forward,
        "  }",
        *chains,
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "{igw_ifname}" ip saddr {vpc_cidr} counter masquerade comment "internet gateway"',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class Hypervisor:
    """Applies ``plan_ports`` and ``render_nft`` to the lab's namespaces; idempotent."""

    def __init__(self, vpc_ns: str, host_ns: Mapping[str, str]) -> None:
        self.vpc_ns = vpc_ns
        self.host_ns = dict(host_ns)  # host -> namespace
        self.sockets = wire.Sockets()
        self._nft = ""

    def close(self) -> None:
        self.sockets.close()

    def setup_router(self, gateways: Sequence[ipaddress.IPv4Address]) -> None:
        """Every subnet's router address, as a /32 on the router's loopback (a /24 there would make
        the whole subnet local)."""
        ipr = self.sockets(self.vpc_ns)
        wire.ensure_up(ipr, "lo")
        for gw in gateways:
            wire.ensure_address(ipr, "lo", ipaddress.IPv4Interface(f"{gw}/32"))

    def apply(self, ports: Sequence[Port], nft: str) -> int:
        """Returns how many changes it made."""
        ipr = self.sockets(self.vpc_ns)
        changes = 0
        wanted = {p.name: p for p in ports}
        for name in self._existing_ports(ipr):
            if name not in wanted:
                _delete_link(ipr, name)
                log.info("port %s: ENI detached, link removed", name)
                changes += 1
        for port in ports:
            changes += self._ensure_port(ipr, port)
        if nft != self._nft:
            res = subprocess.run(
                ["ip", "netns", "exec", self.vpc_ns, "nft", "-f", "-"],
                input=f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n" + nft,
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if res.returncode != 0:
                raise RuntimeError(f"the VPC's nft table was refused: {res.stderr.strip()}")
            self._nft = nft
            changes += 1
        return changes

    def _existing_ports(self, ipr: IPRoute) -> list[str]:
        names = [str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()]
        return [n for n in names if n.startswith(PORT_PREFIX) and len(n) == 13]

    def _ensure_port(self, ipr: IPRoute, port: Port) -> int:
        changes = 0
        node_ns = self.host_ns.get(port.host)
        if node_ns is None:
            return 0
        if wire.link_index(ipr, port.name) is None:
            node = self.sockets(node_ns)
            if wire.link_index(node, port.ifname) is not None:
                _delete_link(node, port.ifname)  # a stale NIC of an earlier attachment
            mtu = VPC_MTU if port.index == 0 else HOTPLUG_MTU
            ipr.link("add", ifname=port.name, kind="veth", mtu=VPC_MTU,
                     peer={"ifname": port.ifname, "net_ns_fd": node_ns, "mtu": mtu})  # fmt: skip
            node.link("set", index=wire.link_index(node, port.ifname), address=port.mac)
            wire.ensure_up(ipr, port.name, VPC_MTU)
            ensure_sysctls(
                {f"net.ipv4.conf.{port.name}.proxy_arp": "1", f"net.ipv4.neigh.{port.name}.proxy_delay": "0"},
                netns=self.vpc_ns,
            )
            if port.index == 0:  # what cloud-init does with the primary NIC
                wire.ensure_up(node, port.ifname, VPC_MTU)
                wire.ensure_address(node, port.ifname, port.primary)
                wire.ensure_route(node, None, [port.gateway])
            log.info("port %s: %s %s of %s attached", port.name, port.eni_id, port.ifname, port.host)
            changes += 1
        changes += self._sync_addresses(ipr, port)
        return changes

    def _sync_addresses(self, ipr: IPRoute, port: Port) -> int:
        index = wire.link_index(ipr, port.name)
        have = {
            ipaddress.IPv4Address(r.get_attr("RTA_DST"))
            for r in ipr.get_routes(family=2, table=254, oif=index)
            if r["dst_len"] == 32 and r.get_attr("RTA_DST")
        }
        changes = 0
        for address in port.addresses:
            if address in have:
                continue
            ipr.neigh("replace", dst=str(address), lladdr=port.mac, ifindex=index, state="permanent")
            ipr.route("replace", dst=f"{address}/32", oif=index, proto=ROUTE_PROTO)
            changes += 1
        for address in have - set(port.addresses):
            try:
                ipr.route("del", dst=f"{address}/32", oif=index)
                ipr.neigh("del", dst=str(address), ifindex=index)
            except NetlinkError:
                pass
            changes += 1
        return changes


def _delete_link(ipr: IPRoute, name: str) -> None:
    index = wire.link_index(ipr, name)
    if index is not None:
        with contextlib.suppress(NetlinkError):
            ipr.link("del", index=index)
