"""IPAM: pure CIDR maths, node-local address allocation, and the registry of IPAM modes."""

from podnet.ipam.base import (
    Allocation,
    Allocator,
    IPAMContext,
    UnsupportedIPAMMode,
    factory_for,
    new_allocator,
    supported_modes,
)
from podnet.ipam.cidr import CIDRError, PoolSpec, next_free_subnet, parse_cidr, parse_pool_spec
from podnet.ipam.host import HostAllocator, IPAMError, IPAMExhausted, router_ip

__all__ = [
    "Allocation",
    "Allocator",
    "CIDRError",
    "HostAllocator",
    "IPAMContext",
    "IPAMError",
    "IPAMExhausted",
    "PoolSpec",
    "UnsupportedIPAMMode",
    "factory_for",
    "new_allocator",
    "next_free_subnet",
    "parse_cidr",
    "parse_pool_spec",
    "router_ip",
    "supported_modes",
]
