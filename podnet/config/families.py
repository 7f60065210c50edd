"""Which IP families a cluster runs (``ipv4.enabled``, ``ipv6.enabled``, ``underlayProtocol``) and
the combinations Cilium refuses, checked without the rest of the configuration (pure).

Dual stack (both enabled) gives every pod an address of each family; node-to-node traffic (the
underlay, the tunnel's outer header) uses ``underlayProtocol``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


def family_conflicts(
    enable_ipv4: bool,
    enable_ipv6: bool,
    underlay_protocol: str,
    routing_mode: str,
    masquerade6: bool,
    native6: ipaddress.IPv6Network | None,
    pools6: Sequence[ipaddress.IPv6Network],
    mask6: int,
) -> list[tuple[str, str]]:
    """(config field, why) for each refused combination."""
    found: list[tuple[str, str]] = []
    if not enable_ipv4 and not enable_ipv6:
        found.append(("enable_ipv4", "false together with ipv6.enabled=false leaves pods without addresses"))
    if underlay_protocol == "ipv6" and not enable_ipv6:
        found.append(("underlay_protocol", "ipv6 needs ipv6.enabled=true"))
    if enable_ipv6 and routing_mode == "native" and masquerade6 and native6 is None:
        found.append((
            "ipv6_native_routing_cidr",
            "must be set when routingMode=native, ipv6.enabled=true and enableIPv6Masquerade=true (the IPv6 "
            "CIDR routed without masquerading, e.g. fd00:10:244::/48); or set enableIPv6Masquerade=false",
        ))  # fmt: skip
    for pool in pools6 if enable_ipv6 else ():
        if not pool.prefixlen < mask6 <= 126:
            found.append((
                "cluster_pool_ipv6_mask_size",
                f"{mask6} does not fit the IPv6 pool {pool}: use a mask size longer than /{pool.prefixlen} "
                "and at most /126 (120 is usual)",
            ))  # fmt: skip
    return found
