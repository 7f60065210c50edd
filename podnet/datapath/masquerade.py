"""Masquerading plan (pure): which pod traffic is SNATed to the node address, as one nft table.

Cilium's rule: traffic from local pods to a destination outside ``ipv4NativeRoutingCIDR`` (and
outside the cluster's pod CIDRs) leaves with the node's address; traffic to other pods, to the
nodes and to the native-routing CIDR keeps the pod address. Everything lives in one table per
family (``table ip podnet``, and ``table ip6 podnet`` with ``enableIPv6Masquerade``, sparing
``ipv6NativeRoutingCIDR``), replaced in a single nft transaction, so there is never a moment with
half a rule set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from podnet import owned
from podnet.model import IPAddress, IPNetwork


@dataclass(frozen=True)
class MasqueradePlan:
    """``nft`` state for one node: SNAT what leaves ``egress_dev`` from ``pod_cidrs`` except to ``exempt``.
    ``egress_dev`` is one device or several, comma-separated (``egressMasqueradeInterfaces``)."""

    pod_cidrs: tuple[IPNetwork, ...]
    exempt: tuple[IPNetwork, ...]
    node_ips: tuple[IPAddress, ...]
    egress_dev: str
    family: int = 4  # 4: table ip podnet; 6: table ip6 podnet (the same rules)

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
    native_routing_cidr: IPNetwork | None,
    node_ips: Iterable[IPAddress | None],
    egress_dev: str,
    family: int = 4,
) -> MasqueradePlan | None:
    """The plan of one family (None when masquerading is off or the node has no pod CIDR of it:
    the table is then removed)."""
    pods = tuple(sorted(c for c in local_pod_cidrs if c.version == family))
    if not enabled or not pods:
        return None
    exempt = {c for c in cluster_cidrs if c.version == family}
    if native_routing_cidr is not None and native_routing_cidr.version == family:
        exempt.add(native_routing_cidr)
    exempt_nets = tuple(ipaddress.collapse_addresses(sorted(exempt)))  # type: ignore[type-var]
    ips = tuple(sorted({ip for ip in node_ips if ip is not None and ip.version == family}))  # type: ignore[type-var]
    return MasqueradePlan(pods, exempt_nets, ips, egress_dev, family)


def _devices(devices: Sequence[str]) -> str:
    """``"eth0"`` or ``{ "eth0", "eth1" }`` (nft's anonymous set; ``eth*`` wildcards as nft has them)."""
    quoted = [f'"{d}"' for d in devices]
    return quoted[0] if len(quoted) == 1 else "{ " + ", ".join(quoted) + " }"


def _elements(items: Iterable[object]) -> str:
    listed = ", ".join(str(i) for i in items)
    return f"elements = {{ {listed} }}" if listed else ""


def render_table(plan: MasqueradePlan) -> str:
    """``table ip podnet`` (``ip6`` for IPv6): sets of pod CIDRs, exempt destinations and node IPs;
    one nat chain."""
    table, kind, match = (
        table_spec(plan.family),
        f"ipv{plan.family}_addr",
        "ip" if plan.family == 4 else "ip6",
    )
    lines = [
        f"table {table} {{",
        f"  set pod_cidrs {{ type {kind}; flags interval; " + _elements(plan.pod_cidrs) + " }",
        f"  set no_masquerade {{ type {kind}; flags interval; " + _elements(plan.exempt) + " }",
        f"  set node_ips {{ type {kind}; " + _elements(plan.node_ips) + " }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    {match} saddr != @pod_cidrs return",
        f"    {match} daddr @no_masquerade return",
        f"    {match} daddr @node_ips return",
        f'    oifname {_devices(plan.egress_devs)} counter masquerade comment "podnet: pod traffic leaving"',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def table_spec(family: int) -> str:
    """``ip podnet`` or ``ip6 podnet``."""
    return f"{'ip' if family == 4 else 'ip6'} {owned.NFT_TABLE}"


def replace_script(plan: MasqueradePlan | None, family: int = 4) -> str:
    """One nft transaction: make sure the table exists, drop it, and (if wanted) define it anew."""
    table = table_spec(plan.family if plan is not None else family)
    script = f"table {table}\ndelete table {table}\n"
    return script + (plan.ruleset() if plan is not None else "")
