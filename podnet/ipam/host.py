"""Node-local pod address allocation inside one pod CIDR (pure: no store, no kernel).

Reserved in every CIDR: the network address, the IPv4 broadcast address, and the router IP
(the first host address, which the node keeps for itself on ``podnet_host``). Allocation is
idempotent per owner (a container ID + interface): asking twice returns the same address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from podnet.model import IPAddress, IPNetwork


class IPAMExhausted(RuntimeError):
    """No free address (or subnet) is left; the message names the CIDR and its size."""


class IPAMError(ValueError):
    """An allocation request that cannot be honoured (address outside the CIDR, reserved, taken)."""


def router_ip(cidr: IPNetwork) -> IPAddress:
    """The node's router (gateway) address for pods of ``cidr``: its first host address."""
    return cidr.network_address + 1


def pod_capacity(cidr: IPNetwork) -> int:
    """Pod addresses a CIDR holds: all but network, router and (IPv4) broadcast."""
    return cidr.num_addresses - (3 if cidr.version == 4 else 2)


class HostAllocator:
    """Hands out single addresses of ``cidr`` to owners; lowest free address first."""

    def __init__(self, cidr: IPNetwork, reserved: Iterable[IPAddress] = ()) -> None:
        if cidr.num_addresses < 4:
            raise IPAMError(
                f"pod CIDR {cidr} is too small: it needs network, router and at least one pod "
                "address (use a /30 or larger for IPv4, /126 or larger for IPv6)"
            )
        self.cidr = cidr
        self.router_ip = router_ip(cidr)
        fixed = {cidr.network_address, self.router_ip}
        if cidr.version == 4:
            fixed.add(cidr.broadcast_address)
        for addr in reserved:
            if addr not in cidr:
                raise IPAMError(f"reserved address {addr} is outside pod CIDR {cidr}")
            fixed.add(addr)
        self._reserved: frozenset[IPAddress] = frozenset(fixed)
        self._by_owner: dict[str, IPAddress] = {}
        self._by_ip: dict[IPAddress, str] = {}

    @property
    def reserved(self) -> frozenset[IPAddress]:
        return self._reserved

    def capacity(self) -> int:
        """How many pod addresses this CIDR can hold at most."""
        return self.cidr.num_addresses - len(self._reserved)

    def free_count(self) -> int:
        return self.capacity() - len(self._by_owner)

    def allocated(self) -> dict[str, IPAddress]:
        """A copy of owner -> address."""
        return dict(self._by_owner)

    def allocate(self, owner: str, ip: IPAddress | None = None) -> IPAddress:
        """The address of ``owner``; a new one (``ip`` if given) the first time."""
        if owner in self._by_owner:
            current = self._by_owner[owner]
            if ip is not None and ip != current:
                raise IPAMError(f"{owner} already holds {current} in {self.cidr}, not {ip}; release it first")
            return current
        chosen = self._check_requested(ip) if ip is not None else self._lowest_free()
        self._by_owner[owner] = chosen
        self._by_ip[chosen] = owner
        return chosen

    def release(self, owner: str) -> IPAddress | None:
        """Free the address of ``owner``; returns it, or None when the owner held nothing."""
        ip = self._by_owner.pop(owner, None)
        if ip is not None:
            del self._by_ip[ip]
        return ip

    def restore(self, allocations: Mapping[str, IPAddress]) -> None:
        """Reload owner -> address after a restart; addresses outside this CIDR are refused."""
        for owner, ip in allocations.items():
            self.allocate(owner, ipaddress.ip_address(ip))

    def _check_requested(self, ip: IPAddress) -> IPAddress:
        if ip not in self.cidr:
            raise IPAMError(f"address {ip} is outside pod CIDR {self.cidr}")
        if ip in self._reserved:
            raise IPAMError(
                f"address {ip} is reserved in pod CIDR {self.cidr} (network, broadcast or router)"
            )
        if ip in self._by_ip:
            raise IPAMError(f"address {ip} of {self.cidr} is already held by {self._by_ip[ip]}")
        return ip

    def _lowest_free(self) -> IPAddress:
        if self.free_count() <= 0:
            raise IPAMExhausted(
                f"pod CIDR {self.cidr} is full: all {self.capacity()} assignable addresses "
                f"({self.cidr.num_addresses} total, {len(self._reserved)} reserved) are in use; "
                "delete pods or give the node another pod CIDR"
            )
        addr = self.cidr.network_address + 1
        while addr in self._reserved or addr in self._by_ip:
            addr += 1
        return addr
