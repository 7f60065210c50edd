"""Masquerading plan (pure): which pod traffic is SNATed to the node address, as one nft table.

Cilium's rule: traffic from local pods to a destination outside ``ipv4NativeRoutingCIDR`` (and
outside the cluster's pod CIDRs) leaves with the node's address; traffic to other pods, to the
nodes and to the native-routing CIDR keeps the pod address. Everything lives in one table
(``table ip podnet``) that is replaced in a single nft transaction, so there is never a moment
with half a rule set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podnet import owned
from podnet.model import IPNetwork


@dataclass(frozen=True)
class MasqueradePlan:
    """``nft`` state for one node: SNAT what leaves ``egress_dev`` from ``pod_cidrs`` except to ``exempt``.
    ``egress_dev`` is one device or several, comma-separated (``egressMasqueradeInterfaces``)."""

    pod_cidrs: tuple[ipaddress.IPv4Network, ...]
    exempt: tuple[ipaddress.IPv4Network, ...]
    node_ips: tuple[ipaddress.IPv4Address, ...]
    egress_dev: str

    @property
    def egress_devs(self) -> tuple[str, ...]:
        return tuple(d for d in self.egress_dev.split(",") if d)

    def ruleset(self) -> str:
        """The table as ``nft -f`` input (without the replace preamble)."""
        return render_table(self)


def plan_masquerade(
    enabled: bool,
    local_pod_cidrs: Sequence[IPNetwork],
    cluster_cidrs: Sequence[IPNetwork],
    native_routing_cidr: ipaddress.IPv4Network | None,
    node_ips: Iterable[ipaddress.IPv4Address | None],
    egress_dev: str,
) -> MasqueradePlan | None:
    """None when masquerading is off (the table is then removed)."""
    pods = tuple(sorted(c for c in local_pod_cidrs if isinstance(c, ipaddress.IPv4Network)))
    if not enabled or not pods:
        return None
    exempt = {c for c in cluster_cidrs if isinstance(c, ipaddress.IPv4Network)}
    if native_routing_cidr is not None:
        exempt.add(native_routing_cidr)
    exempt_nets = tuple(ipaddress.collapse_addresses(sorted(exempt)))
    ips = tuple(sorted({ip for ip in node_ips if isinstance(ip, ipaddress.IPv4Address)}))
    return MasqueradePlan(pods, exempt_nets, ips, egress_dev)


def _devices(devices: Sequence[str]) -> str:
    """``"eth0"`` or ``{ "eth0", "eth1" }`` (nft's anonymous set; ``eth*`` wildcards as nft has them)."""
    quoted = [f'"{d}"' for d in devices]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def _elements(items: Iterable[object]) -> str:
    listed = ", ".join(str(i) for i in items)
    return f"elements = {{ {listed} }}" if listed else ""


def render_table(plan: MasqueradePlan) -> str:
    """``table ip podnet``: sets of pod CIDRs, exempt destinations and node IPs; one nat chain."""
    table = owned.NFT_TABLE
    lines = [
        f"table ip {table} {{",
        "  set pod_cidrs { type ipv4_addr; flags interval; " + _elements(plan.pod_cidrs) + " }",
        "  set no_masquerade { type ipv4_addr; flags interval; " + _elements(plan.exempt) + " }",
        "  set node_ips { type ipv4_addr; " + _elements(plan.node_ips) + " }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    ip saddr != @pod_cidrs return",
        "    ip daddr @no_masquerade return",
        "    ip daddr @node_ips return",
        f'    oifname {_devices(plan.egress_devs)} counter masquerade comment "podnet: pod traffic leaving"',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def replace_script(plan: MasqueradePlan | None) -> str:
    """One nft transaction: make sure the table exists, drop it, and (if wanted) define it anew."""
    table = owned.NFT_TABLE
    script = f"table ip {table}\ndelete table ip {table}\n"
    return script + (plan.ruleset() if plan is not None else "")
