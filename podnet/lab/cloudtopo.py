"""A topology's ``cloud:`` section (``provider: aws``): a VPC in the lab, turned into the plain
topology form before the rest of the file is read.

    cloud:
      provider: aws
      region: us-east-1
      vpc:
        cidr: 10.0.0.0/16
        subnets: [{name: a, cidr: 10.0.1.0/24, az: us-east-1a, tags: {tier: pods}}]
      securityGroups:
        - {name: pods, tags: {...}, ingress: [{protocol: tcp, ports: "5201", from: 10.0.0.0/16},
                                              {protocol: all, from: pods}]}
      internet: {cidr: 203.0.113.0/24}
    nodes:
      - {name: node1, subnet: a, instanceType: m5.large, securityGroups: [pods]}

Design fact: every subnet becomes a network at MTU 9001 whose hosts are EC2 instances: the VPC
router (host ``vpc``, the subnet's ``.1``) is the only thing on their links, as in AWS, so ARP,
source/destination checks and security groups all happen on its side (``lab.vpc``). Nodes and
the control plane become instances (``lab.cloud`` creates them in the lab's EC2, moto); the
``internet`` network holds the VPC's internet gateway (NAT of the VPC's addresses) and the world.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.lab.topomodel import TopologyError, checked_mapping

VPC_MTU = 9001
VPC_ROUTER = "vpc"
INTERNET = "internet"
DEFAULT_INTERNET = ipaddress.IPv4Network("203.0.113.0/24")
DEFAULT_INSTANCE_TYPE = "m5.large"
CONTROL_PLANE_TYPE = "t3.medium"
DEFAULT_GROUP = "lab-default"  # all traffic from inside the VPC: hosts that name no group
PROTOCOLS = {"all": "-1", "-1": "-1", "tcp": "tcp", "udp": "udp", "icmp": "icmp"}
AZ_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


@dataclass(frozen=True)
class SgRule:
    """One ingress permission: ``protocol`` is EC2's (-1 for all), ``source`` a CIDR or a group name."""

    protocol: str
    from_port: int
    to_port: int
    source: str

    def permission(self, group_ids: Mapping[str, str]) -> dict[str, Any]:
        """As EC2's IpPermissions entry (a group source by its ID)."""
        perm: dict[str, Any] = {"IpProtocol": self.protocol}
        if self.protocol in ("tcp", "udp", "icmp"):
            perm.update(FromPort=self.from_port, ToPort=self.to_port)
        if self.source in group_ids:
            perm["UserIdGroupPairs"] = [{"GroupId": group_ids[self.source]}]
        else:
            perm["IpRanges"] = [{"CidrIp": self.source}]
        return perm


@dataclass(frozen=True)
class SecurityGroup:
    name: str
    ingress: tuple[SgRule, ...]
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Subnet:
    name: str
    cidr: ipaddress.IPv4Network
    az: str
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.cidr.network_address + 1


@dataclass(frozen=True)
class InstanceSpec:
    host: str
    subnet: str
    address: ipaddress.IPv4Address
    instance_type: str
    security_groups: tuple[str, ...]


@dataclass(frozen=True)
class Cloud:
    region: str
    vpc_cidr: ipaddress.IPv4Network
    subnets: tuple[Subnet, ...]
    security_groups: tuple[SecurityGroup, ...]
    instances: tuple[InstanceSpec, ...]
    internet: ipaddress.IPv4Network
    igw_ifname: str = INTERNET

    def subnet(self, name: str) -> Subnet:
        return next(s for s in self.subnets if s.name == name)


def _tags(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: tags must be a mapping of key: value")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


def _net(value: Any, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value))
    except ValueError as e:
        raise TopologyError(f"{where}: {value!r} is not an IPv4 CIDR like 10.0.1.0/24 ({e})") from e


def _subnets(raw: Any, vpc: ipaddress.IPv4Network, region: str) -> tuple[Subnet, ...]:
    if not isinstance(raw, list) or not raw:
        raise TopologyError("cloud.vpc.subnets: a VPC needs a list of at least one subnet")
    found: list[Subnet] = []
    for i, item in enumerate(raw):
        where = f"cloud.vpc.subnets[{i}]"
        m = checked_mapping(item, where, {"name", "cidr", "az", "tags"})
        cidr = _net(m.get("cidr"), f"{where}.cidr")
        if not cidr.subnet_of(vpc):
            raise TopologyError(f"{where}.cidr: {cidr} is outside the VPC's {vpc}")
        if not 16 <= cidr.prefixlen <= 28:
            raise TopologyError(f"{where}.cidr: a subnet is a /16 to /28 (AWS's rule), not /{cidr.prefixlen}")
        az = str(m.get("az", f"{region}a"))
        if not AZ_RE.match(az) or not az.startswith(region):
            raise TopologyError(
                f"{where}.az: {az!r} is not an availability zone of {region} (like {region}a)"
            )
        found.append(Subnet(str(m.get("name", "")), cidr, az, _tags(m.get("tags"), f"{where}.tags")))
    return tuple(found)


def _ports(value: Any, where: str) -> tuple[int, int]:
    text = str(value if value is not None else "")
    low, _, high = text.partition("-")
    try:
        a, b = int(low), int(high or low)
    except ValueError:
        raise TopologyError(f"{where}: {value!r} is not a port or a range like 8000-8080") from None
    if not 0 <= a <= b <= 65535:
        raise TopologyError(f"{where}: {value!r} is not a port range within 0-65535")
    return a, b


def _groups(raw: Any) -> tuple[SecurityGroup, ...]:
    found: list[SecurityGroup] = []
    for i, item in enumerate(raw or []):
        where = f"cloud.securityGroups[{i}]"
        m = checked_mapping(item, where, {"name", "tags", "ingress"})
        rules: list[SgRule] = []
        for j, rule in enumerate(m.get("ingress") or []):
            rw = f"{where}.ingress[{j}]"
            r = checked_mapping(rule, rw, {"protocol", "ports", "from"})
            proto = PROTOCOLS.get(str(r.get("protocol", "all")).lower())
            if proto is None:
                raise TopologyError(f"{rw}.protocol: {r.get('protocol')!r} is not one of all, tcp, udp, icmp")
            low, high = _ports(r.get("ports"), f"{rw}.ports") if proto in ("tcp", "udp") else (-1, -1)
            source = str(r.get("from", ""))
            if not source:
                raise TopologyError(f"{rw}.from: missing; give a CIDR or a security group's name")
            rules.append(SgRule(proto, low, high, source))
        found.append(
            SecurityGroup(str(m.get("name", "")), tuple(rules), _tags(m.get("tags"), f"{where}.tags"))
        )
    names = {g.name for g in found} | {DEFAULT_GROUP}
    for g in found:
        for r in g.ingress:
            if "/" not in r.source and r.source not in names:
                raise TopologyError(
                    f"security group {g.name}: source {r.source!r} is neither a CIDR nor a group"
                )
    return tuple(found)


def expand_cloud(data: Mapping[str, Any]) -> tuple[dict[str, Any], Cloud]:
    """The topology mapping with the VPC as networks, a router and instance hosts; and the cloud."""
    m = checked_mapping(data["cloud"], "cloud", {"provider", "region", "vpc", "securityGroups", "internet"})
    if m.get("provider", "aws") != "aws":
        raise TopologyError(f"cloud.provider: {m.get('provider')!r} is not supported (only aws)")
    for key in ("networks", "routers"):
        if data.get(key):
            raise TopologyError(f"{key}: a cloud topology makes its own (subnets, the VPC router); remove it")
    region = str(m.get("region", "us-east-1"))
    vpc = checked_mapping(m.get("vpc"), "cloud.vpc", {"cidr", "subnets"})
    vpc_cidr = _net(vpc.get("cidr"), "cloud.vpc.cidr")
    subnets = _subnets(vpc.get("subnets"), vpc_cidr, region)
    groups = _groups(m.get("securityGroups"))
    internet_raw = checked_mapping(m.get("internet") or {}, "cloud.internet", {"cidr"})
    internet = _net(internet_raw.get("cidr", DEFAULT_INTERNET), "cloud.internet.cidr")
    by_name = {s.name: s for s in subnets}
    nodes, instances = [], []
    for i, raw in enumerate(data.get("nodes") or []):
        where = f"nodes[{i}]"
        n = dict(
            checked_mapping(
                raw, where, {"name", "subnet", "address", "instanceType", "securityGroups", "config"}
            )
        )
        subnet = by_name.get(str(n.get("subnet", subnets[0].name)))
        if subnet is None:
            raise TopologyError(
                f"{where}.subnet: unknown subnet {n.get('subnet')!r} (known: {', '.join(by_name)})"
            )
        taken = {x.address for x in instances}
        address = ipaddress.IPv4Address(str(n["address"])) if n.get("address") else _next_free(subnet, taken)
        itype = str(n.get("instanceType", DEFAULT_INSTANCE_TYPE))
        if not TYPE_RE.match(itype):
            raise TopologyError(f"{where}.instanceType: {itype!r} is not an instance type like m5.large")
        sgs = tuple(str(g) for g in n.get("securityGroups") or [DEFAULT_GROUP])
        unknown = [g for g in sgs if g not in {x.name for x in groups} | {DEFAULT_GROUP}]
        if unknown:
            raise TopologyError(f"{where}.securityGroups: unknown group {unknown[0]!r}")
        instances.append(InstanceSpec(str(n.get("name")), subnet.name, address, itype, sgs))
        node = {
            "name": n.get("name"),
            "network": subnet.name,
            "address": str(address),
            "gateway": str(subnet.gateway),
        }
        if n.get("config") is not None:
            node["config"] = n["config"]
        nodes.append(node)
    router = {
        "name": VPC_ROUTER,
        "interfaces": [{"network": s.name, "address": str(s.gateway)} for s in subnets],
    }
    router["interfaces"].append({"network": INTERNET, "address": str(internet.network_address + 1)})
    external = dict(data.get("external") or {"name": "world"})
    external.setdefault("network", INTERNET)
    external.setdefault("address", str(internet.network_address + 10))
    external.setdefault("gateway", str(internet.network_address + 1))
    out = {k: v for k, v in data.items() if k != "cloud"}
    out.update(
        networks=[{"name": s.name, "cidr": str(s.cidr), "mtu": VPC_MTU} for s in subnets]
        + [{"name": INTERNET, "cidr": str(internet)}],
        routers=[router],
        nodes=nodes,
        external=external,
    )
    cloud = Cloud(region, vpc_cidr, subnets, groups, tuple(instances), internet)
    return out, cloud


def _next_free(subnet: Subnet, taken: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    for k in range(10, subnet.cidr.num_addresses - 1):
        address = subnet.cidr.network_address + k
        if address not in taken:
            return address
    raise TopologyError(f"subnet {subnet.name} ({subnet.cidr}) has no free address for another instance")


def with_control_planes(cloud: Cloud, hosts: list[Any]) -> Cloud:
    """The cloud with an instance for every control-plane host (they live in the VPC too)."""
    import dataclasses

    extra = []
    subnets = {s.cidr: s for s in cloud.subnets}
    for h in hosts:
        if h.role != "controlplane":
            continue
        subnet = next(s for c, s in subnets.items() if h.primary.address.ip in c)
        extra.append(
            InstanceSpec(h.name, subnet.name, h.primary.address.ip, CONTROL_PLANE_TYPE, (DEFAULT_GROUP,))
        )
    return dataclasses.replace(cloud, instances=(*cloud.instances, *extra))
