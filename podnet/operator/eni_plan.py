"""ENI IPAM's operator decisions for one node, pure: what to ask EC2 for next.

Order of a node's plan, each step only when the one before has nothing to do:
1. marks on addresses a pod took meanwhile are dropped (the agent won that race);
2. marked addresses the agent declared ready are unassigned (UnassignPrivateIpAddresses);
3. a shortfall (``needed > 0``) first takes back outstanding marks, then assigns
   ``needed + maxAboveWatermark`` addresses to the first usable ENI with room, else creates and
   attaches a new ENI (subnet by IDs, then tags, then eth0's, most free addresses first; security
   groups by IDs, then tags, then eth0's) -- never past the instance type's limits;
4. an excess held for longer than the release delay marks free addresses of the ENI with the most
   free ones, at most the excess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from podnet.config.eni import EniSettings
from podnet.ipam.enimodel import Eni, Limits, excess_addresses, needed_addresses

IPv4 = ipaddress.IPv4Address
MAX_DEVICES = 16  # device indexes 0..15: the ENI tables 10..25 (podnet.datapath.eni.MAX_ENIS)


@dataclass(frozen=True)
class Instance:
    id: str
    type: str
    az: str
    vpc_id: str
    subnet_id: str  # eth0's
    security_groups: tuple[str, ...]  # eth0's


@dataclass(frozen=True)
class Subnet:
    id: str
    cidr: ipaddress.IPv4Network
    az: str
    vpc_id: str
    available: int
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Assign:
    eni_id: str
    count: int


@dataclass(frozen=True)
class Create:
    subnet_id: str
    groups: tuple[str, ...]
    index: int
    count: int


@dataclass(frozen=True)
class Mark:
    addresses: tuple[tuple[IPv4, str], ...]  # (address, ENI)


@dataclass(frozen=True)
class Unmark:
    addresses: tuple[IPv4, ...]


@dataclass(frozen=True)
class Unassign:
    eni_id: str
    addresses: tuple[IPv4, ...]


Action = Assign | Create | Mark | Unmark | Unassign


@dataclass(frozen=True)
class NodeState:
    """Everything the plan of one node depends on."""

    spec: EniSettings
    instance: Instance
    limits: Limits
    enis: tuple[Eni, ...]
    used: frozenset[IPv4]  # the agent's, router IP included
    marked: Mapping[IPv4, str] = field(default_factory=dict)  # address -> ENI, marked for release
    ready: frozenset[IPv4] = frozenset()  # marked addresses the agent will not use
    excess_for: float = 0.0  # seconds the excess has lasted


@dataclass(frozen=True)
class NodePlan:
    actions: tuple[Action, ...]
    available: int
    used: int
    needed: int
    excess: int
    limit_reached: str = ""
    problem: str = ""  # a setting that cannot be met (no subnet, no security group)


def usable(state: NodeState) -> list[Eni]:
    return [e for e in state.enis if e.index >= state.spec.first_interface_index]


def plan_node(state: NodeState, subnets: Sequence[Subnet], tagged_groups: Sequence[str] = ()) -> NodePlan:
    """The next EC2 actions for one node (``tagged_groups``: security groups matching the node's
    ``securityGroupTags``, looked up by the caller)."""
    spec = state.spec
    enis = usable(state)
    addresses = {a for e in enis for a in e.addresses}
    marked = {a: e for a, e in state.marked.items() if a in addresses}
    available = len(addresses) - len(marked)
    used = len(state.used & addresses)
    needed = needed_addresses(available, used, spec.pre_allocate, spec.min_allocate)
    excess = excess_addresses(available, used, spec.pre_allocate, spec.min_allocate, spec.max_above_watermark)

    def result(*actions: Action, limit: str = "", problem: str = "") -> NodePlan:
        return NodePlan(tuple(actions), available, used, needed, excess, limit, problem)

    taken = tuple(sorted(a for a in marked if a in state.used))
    if taken:
        return result(Unmark(taken))
    ready = sorted(a for a in marked if a in state.ready)
    if ready:
        eni_id = marked[ready[0]]
        return result(Unassign(eni_id, tuple(a for a in ready if marked[a] == eni_id)))
    if needed > 0:
        if marked:
            return result(Unmark(tuple(sorted(marked))))
        action, limit, problem = _grow(state, enis, needed + spec.max_above_watermark, subnets, tagged_groups)
        return result(*([action] if action else []), limit=limit, problem=problem)
    if spec.release_excess and excess > 0 and state.excess_for >= spec.release_delay and not marked:
        return result(_mark(enis, state.used, excess))
    return result()


def _grow(
    state: NodeState, enis: Sequence[Eni], want: int, subnets: Sequence[Subnet], tagged_groups: Sequence[str]
) -> tuple[Action | None, str, str]:
    """(action, limit reached, problem) for a shortfall of ``want`` addresses."""
    limits, spec, inst = state.limits, state.spec, state.instance
    free_in = {s.id: s.available for s in subnets}
    for eni in sorted(enis, key=lambda e: e.index):
        room = min(limits.ipv4_per_adapter - 1 - len(eni.addresses), free_in.get(eni.subnet_id, want))
        if room > 0:  # an ENI whose subnet is full cannot grow: a new ENI may go elsewhere
            return Assign(eni.id, min(want, room)), "", ""
    taken = {e.index for e in state.enis}
    index = next(
        (i for i in range(max(1, spec.first_interface_index), MAX_DEVICES) if i not in taken), MAX_DEVICES
    )
    if len(state.enis) >= limits.adapters or index >= min(limits.adapters, MAX_DEVICES):
        total = limits.pod_addresses(spec.first_interface_index)
        return (
            None,
            (
                f"instance {inst.id} ({inst.type}) takes at most {limits.adapters} ENIs of "
                f"{limits.ipv4_per_adapter} addresses each (the primary included): {total} pod addresses "
                f"with firstInterfaceIndex {spec.first_interface_index}, all assigned; use a larger "
                "instance type or fewer pods on this node"
            ),
            "",
        )
    subnet = pick_subnet(state, subnets)
    if subnet is None:
        return None, "", _no_subnet(state)
    if spec.security_group_tags and not spec.security_groups and not tagged_groups:
        return None, "", f"no security group matches securityGroupTags {dict(spec.security_group_tags)}"
    groups = spec.security_groups or tuple(tagged_groups) or inst.security_groups
    count = min(want, limits.ipv4_per_adapter - 1, max(0, subnet.available - 1))
    return Create(subnet.id, tuple(groups), index, count), "", ""


def pick_subnet(state: NodeState, subnets: Sequence[Subnet]) -> Subnet | None:
    """Subnets by ID, else by tags, else eth0's; in the instance's VPC and AZ; most free first."""
    spec, inst = state.spec, state.instance
    here = [s for s in subnets if s.vpc_id == inst.vpc_id and s.az == inst.az]
    if spec.subnet_ids:
        found = [s for s in here if s.id in spec.subnet_ids]
    elif spec.subnet_tags:
        wanted = set(spec.subnet_tags)
        found = [s for s in here if wanted <= set(s.tags)]
    else:
        found = [s for s in here if s.id == inst.subnet_id]
    found = [s for s in found if s.available > 1]
    return max(found, key=lambda s: (s.available, s.id), default=None)


def _no_subnet(state: NodeState) -> str:
    spec, inst = state.spec, state.instance
    how = (
        f"subnetIDsFilter {list(spec.subnet_ids)}"
        if spec.subnet_ids
        else f"subnetTagsFilter {dict(spec.subnet_tags)}"
        if spec.subnet_tags
        else f"eth0's subnet {inst.subnet_id}"
    )
    return (
        f"no subnet with free addresses matches {how} in {inst.vpc_id}, availability zone {inst.az} "
        "(ENIs must be in the instance's zone): fix the filter or free addresses"
    )


def _mark(enis: Sequence[Eni], used: frozenset[IPv4], excess: int) -> Mark:
    """Free addresses of the ENI with the most free ones, at most ``excess``."""
    best: list[tuple[IPv4, str]] = []
    for eni in enis:
        free = [(a, eni.id) for a in sorted(eni.addresses, reverse=True) if a not in used]
        if len(free) > len(best):
            best = free
    return Mark(tuple(best[:excess]))
