"""ENI IPAM's shared, pure model: a node's ENIs as the operator publishes them, the instance
type's limits, and Cilium's two formulas (addresses needed, addresses in excess).

    needed = preAllocate - (available - used), at least minAllocate - available
    excess = available - used - preAllocate - maxAboveWatermark,
             at most available - (minAllocate + maxAboveWatermark)

``available`` counts the secondary addresses of the ENIs podnet may use (device index at least
``firstInterfaceIndex``); an ENI's primary address is never given to a pod (it is the ENI's own).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROUTER_OWNER = "router"


@dataclass(frozen=True)
class Eni:
    """One attached ENI: ``ethN`` on the node with ``mac``, in ``subnet_cidr``."""

    id: str
    index: int  # the attachment's DeviceIndex: the node sees it as eth<index>
    mac: str
    subnet_id: str
    subnet_cidr: ipaddress.IPv4Network
    primary: ipaddress.IPv4Address
    addresses: tuple[ipaddress.IPv4Address, ...]  # secondary addresses, for pods
    security_groups: tuple[str, ...] = ()

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The VPC router of the ENI's subnet: its first address (AWS's rule)."""
        return self.subnet_cidr.network_address + 1

    @property
    def table(self) -> int:
        from podnet import owned

        return owned.ENI_TABLE_BASE + self.index

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "mac": self.mac,
            "subnet": {"id": self.subnet_id, "cidr": str(self.subnet_cidr)},
            "primary": str(self.primary),
            "addresses": [str(a) for a in self.addresses],
            "securityGroups": list(self.security_groups),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Eni:
        subnet = doc.get("subnet") or {}
        return cls(
            id=str(doc["id"]),
            index=int(doc["index"]),
            mac=str(doc["mac"]).lower(),
            subnet_id=str(subnet.get("id", "")),
            subnet_cidr=ipaddress.IPv4Network(str(subnet["cidr"])),
            primary=ipaddress.IPv4Address(str(doc["primary"])),
            addresses=tuple(ipaddress.IPv4Address(str(a)) for a in doc.get("addresses") or ()),
            security_groups=tuple(str(g) for g in doc.get("securityGroups") or ()),
        )


@dataclass(frozen=True)
class Limits:
    """What the instance type allows (DescribeInstanceTypes' NetworkInfo)."""

    adapters: int  # MaximumNetworkInterfaces
    ipv4_per_adapter: int  # Ipv4AddressesPerInterface, the primary included

    def pod_addresses(self, first_interface_index: int) -> int:
        """Secondary addresses the node can ever hold for pods."""
        return max(0, self.adapters - first_interface_index) * max(0, self.ipv4_per_adapter - 1)

    def to_json(self) -> dict[str, int]:
        return {"adapters": self.adapters, "ipv4PerAdapter": self.ipv4_per_adapter}


def enis_from_status(status: Mapping[str, Any]) -> tuple[Eni, ...]:
    """The ENIs of an operator status document, by device index; unreadable entries are skipped."""
    found = []
    for doc in (status.get("enis") or {}).values():
        try:
            found.append(Eni.from_json(doc))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(sorted(found, key=lambda e: e.index))


def needed_addresses(available: int, used: int, pre_allocate: int, min_allocate: int) -> int:
    """How many more addresses the node must get now (0 or less: none)."""
    needed = pre_allocate - (available - used)
    if min_allocate > 0:
        needed = max(needed, min_allocate - available)
    return needed


def excess_addresses(
    available: int, used: int, pre_allocate: int, min_allocate: int, max_above_watermark: int
) -> int:
    """How many addresses the node could give back (0 or less: none). It always keeps
    ``minAllocate + maxAboveWatermark`` (Cilium's calculateExcessIPs)."""
    floor = min_allocate + max_above_watermark
    if available <= floor:
        return 0
    return min(available - used - pre_allocate - max_above_watermark, available - floor)
