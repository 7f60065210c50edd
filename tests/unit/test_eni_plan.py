"""ENI IPAM without root: Cilium's formulas, the operator's plan, the node's allocator, the
datapath's tables and rules, and the lab VPC's nft table."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

import pytest

from podnet import owned
from podnet.config.eni import EniSettings
from podnet.datapath.eni import EniPort, plan_eni
from podnet.ipam.eni import EniAllocator
from podnet.ipam.enimodel import Eni, Limits, excess_addresses, needed_addresses
from podnet.ipam.host import IPAMExhausted
from podnet.lab.vpc import plan_ports, render_nft
from podnet.operator import eni_plan as ep

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network


@pytest.mark.parametrize(
    ("available", "used", "pre", "min_", "needed"),
    [
        (0, 0, 8, 0, 8),
        (9, 1, 8, 0, 0),
        (9, 2, 8, 0, 1),
        (20, 1, 8, 0, -11),
        (4, 0, 2, 10, 6),
        (0, 0, 0, 0, 0),
    ],
)
def test_needed_addresses(available: int, used: int, pre: int, min_: int, needed: int) -> None:
    assert needed_addresses(available, used, pre, min_) == needed


@pytest.mark.parametrize(
    ("available", "used", "pre", "min_", "above", "excess"),
    [(18, 1, 8, 0, 0, 9), (18, 1, 8, 0, 4, 5), (18, 1, 8, 16, 0, 2), (9, 1, 8, 0, 0, 0), (6, 1, 0, 4, 2, 0)],
)
def test_excess_addresses(available: int, used: int, pre: int, min_: int, above: int, excess: int) -> None:
    assert excess_addresses(available, used, pre, min_, above) == excess


INSTANCE = ep.Instance(
    "i-0123456789abcdef0", "m5.large", "us-east-1a", "vpc-1", "subnet-00000001", ("sg-00000000",)
)
M5 = Limits(3, 10)


def eni(index: int, n: int, subnet: str = "10.0.8.0/24", eni_id: str = "") -> Eni:
    net = N(subnet)
    base = 10 * index + 20
    return Eni(
        id=eni_id or f"eni-{index:017x}",
        index=index,
        mac=f"02:00:00:00:00:{index:02x}",
        subnet_id="subnet-00000008",
        subnet_cidr=net,
        primary=net.network_address + base,
        addresses=tuple(net.network_address + base + 1 + k for k in range(n)),
    )


SUBNETS = [
    ep.Subnet("subnet-00000001", N("10.0.1.0/24"), "us-east-1a", "vpc-1", 240),
    ep.Subnet("subnet-00000008", N("10.0.8.0/24"), "us-east-1a", "vpc-1", 200, (("tier", "pods"),)),
    ep.Subnet("subnet-00000009", N("10.0.9.0/24"), "us-east-1a", "vpc-1", 250, (("tier", "pods"),)),
    ep.Subnet("subnet-0000000b", N("10.0.11.0/24"), "us-east-1b", "vpc-1", 251, (("tier", "pods"),)),
]


def state(enis: tuple[Eni, ...], used: int = 0, **spec: Any) -> ep.NodeState:
    settings = EniSettings(**{"first_interface_index": 1, **spec})
    addrs = [a for e in enis if e.index >= settings.first_interface_index for a in e.addresses]
    return ep.NodeState(settings, INSTANCE, M5, (eni(0, 0, "10.0.1.0/24"), *enis), frozenset(addrs[:used]))


def test_a_new_node_gets_an_eni_in_its_own_subnet_with_eth0s_groups() -> None:
    plan = ep.plan_node(state(()), SUBNETS)
    assert plan.actions == (ep.Create("subnet-00000001", ("sg-00000000",), 1, 8),)
    assert plan.needed == 8


def test_subnet_by_tags_picks_the_most_free_in_the_instances_zone() -> None:
    plan = ep.plan_node(state((), subnet_tags=(("tier", "pods"),)), SUBNETS)
    assert plan.actions[0].subnet_id == "subnet-00000009"  # 250 free; 251 is in another zone
    by_id = ep.plan_node(state((), subnet_ids=("subnet-00000008",)), SUBNETS)
    assert by_id.actions[0].subnet_id == "subnet-00000008"


def test_security_groups_by_id_then_tags() -> None:
    plan = ep.plan_node(state((), security_groups=("sg-0000000a",)), SUBNETS, ["sg-0000000b"])
    assert plan.actions[0].groups == ("sg-0000000a",)
    tagged = ep.plan_node(state((), security_group_tags=(("k", "v"),)), SUBNETS, ["sg-0000000b"])
    assert tagged.actions[0].groups == ("sg-0000000b",)
    missing = ep.plan_node(state((), security_group_tags=(("k", "v"),)), SUBNETS, [])
    assert missing.actions == () and "securityGroupTags" in missing.problem


def test_shortfall_fills_the_eni_with_room_before_creating_one() -> None:
    plan = ep.plan_node(state((eni(1, 5),), used=3), SUBNETS)
    assert plan.actions == (ep.Assign("eni-00000000000000001", 4),)  # room 9 - 5; needed 6
    full = ep.plan_node(state((eni(1, 9),), used=3), SUBNETS)
    assert full.actions == (ep.Create("subnet-00000001", ("sg-00000000",), 2, 2),)


def test_max_above_watermark_asks_for_more_at_once() -> None:
    plan = ep.plan_node(state((eni(1, 2),), used=2, max_above_watermark=3), SUBNETS)
    assert plan.actions == (ep.Assign("eni-00000000000000001", 7),)  # needed 8 + 3, room 7


def test_the_instance_types_limits_are_never_passed() -> None:
    plan = ep.plan_node(state((eni(1, 9), eni(2, 9)), used=12), SUBNETS)
    assert plan.actions == ()
    assert "at most 3 ENIs of 10 addresses" in plan.limit_reached and "18 pod addresses" in plan.limit_reached


def test_no_matching_subnet_is_a_problem_not_a_call() -> None:
    plan = ep.plan_node(state((), subnet_tags=(("tier", "db"),)), SUBNETS)
    assert plan.actions == () and "subnetTagsFilter" in plan.problem


def test_release_waits_for_the_delay_then_marks_free_addresses() -> None:
    base = state((eni(1, 9), eni(2, 9)), used=1, release_excess=True, release_delay=10.0)
    assert ep.plan_node(base, SUBNETS).actions == ()
    held = ep.NodeState(**{**base.__dict__, "excess_for": 10.0})
    (mark,) = ep.plan_node(held, SUBNETS).actions
    assert isinstance(mark, ep.Mark) and len(mark.addresses) == 9
    assert all(a not in base.used for a, _ in mark.addresses)
    off = ep.NodeState(**{**held.__dict__, "spec": EniSettings(first_interface_index=1)})
    assert ep.plan_node(off, SUBNETS).actions == ()  # awsReleaseExcessIPs is off by default


def test_release_handshake() -> None:
    enis = (eni(1, 9), eni(2, 9))
    marked = {a: enis[1].id for a in enis[1].addresses[:4]}
    base = state(enis, used=1, release_excess=True, release_delay=0.0)
    taken = ep.NodeState(**{**base.__dict__, "marked": marked, "used": base.used | {enis[1].addresses[0]}})
    assert ep.plan_node(taken, SUBNETS).actions == (ep.Unmark((enis[1].addresses[0],)),)
    ready = ep.NodeState(**{**base.__dict__, "marked": marked, "ready": frozenset(marked)})
    assert ep.plan_node(ready, SUBNETS).actions == (ep.Unassign(enis[1].id, tuple(sorted(marked))),)
    short = ep.NodeState(**{**base.__dict__, "marked": marked, "used": frozenset(enis[0].addresses)})
    assert ep.plan_node(short, SUBNETS).actions == (ep.Unmark(tuple(sorted(marked))),)


# ---- the node's allocator ---------------------------------------------------------------------


def status(*enis: Eni, **extra: Any) -> dict[str, Any]:
    return {"enis": {e.id: e.to_json() for e in enis}, **extra}


def test_allocator_hands_out_lowest_free_and_keeps_a_router_ip() -> None:
    alloc = EniAllocator("node1", EniSettings(first_interface_index=1), wait=0.0)
    alloc.set_status(status(eni(0, 3, "10.0.1.0/24"), eni(1, 3)))
    (router,) = alloc.router_ips()
    assert router == A("10.0.8.31")  # the lowest address of eth1; eth0's are below firstInterfaceIndex
    (first,) = alloc.allocate("c1/eth0")
    assert first.ip == A("10.0.8.32") and first.gateway == router
    assert alloc.allocate("c1/eth0") == (first,)
    assert alloc.used() == {"10.0.8.31": "router", "10.0.8.32": "c1/eth0"}
    restarted = EniAllocator("node1", EniSettings(first_interface_index=1), wait=0.0)
    restarted.set_status(status(eni(0, 3, "10.0.1.0/24"), eni(1, 3)), {"10.0.8.33": "router"})
    assert restarted.router_ips() == (A("10.0.8.33"),)  # the one the last run recorded


def test_allocator_never_hands_out_a_marked_address_and_reports_ready_ones() -> None:
    e = eni(1, 4)
    alloc = EniAllocator("node1", EniSettings(first_interface_index=1), wait=0.0)
    alloc.set_status(status(e, release={str(a): e.id for a in e.addresses[2:]}))
    (a,) = alloc.allocate("p1")
    assert a.ip == e.addresses[1]
    with pytest.raises(IPAMExhausted, match="no free ENI address"):
        alloc.allocate("p2")
    assert alloc.release_ready() == {str(x): 0 for x in e.addresses[2:]}


def test_allocator_fails_at_once_at_the_limit_and_waits_otherwise() -> None:
    e = eni(1, 1)
    alloc = EniAllocator("node1", EniSettings(first_interface_index=1), wait=5.0)
    alloc.set_status(status(e, limitReached="instance i-1 (m5.large) takes at most 3 ENIs"))
    started = time.monotonic()
    with pytest.raises(IPAMExhausted, match="none can be added: instance i-1"):
        alloc.allocate("p1")
    assert time.monotonic() - started < 2.0
    alloc.set_status(status(e))
    grown = eni(1, 3)
    threading.Timer(0.3, alloc.set_status, [status(grown)]).start()
    (got,) = alloc.allocate("p1")  # waited for the operator's new addresses
    assert got.ip == grown.addresses[1]


# ---- the datapath ------------------------------------------------------------------------------


def test_eni_tables_and_rules() -> None:
    ports = [EniPort(1, "02:00:00:00:00:01", A("10.0.8.1")), EniPort(2, "02:00:00:00:00:02", A("10.0.9.1"))]
    plan = plan_eni(ports, {"02:00:00:00:00:01": "eth1"}, {A("10.0.8.5"): 1, A("10.0.9.7"): 2})
    assert plan.links == (("eth1", 9001),)
    assert [r.describe() for r in plan.routes] == [
        "10.0.8.1/32 dev eth1 table 11 scope link proto 201",
        "default via 10.0.8.1 dev eth1 table 11 proto 201",
    ]
    assert plan.missing == ("eth2 (02:00:00:00:00:02)",)
    assert [r.describe() for r in plan.rules] == [
        "ip rule pref 20 to 10.0.8.5/32 lookup main proto 201",
        "ip rule pref 20 to 10.0.9.7/32 lookup main proto 201",
        "ip rule pref 111 from 10.0.8.5/32 lookup 11 proto 201",
        "ip rule pref 111 from 10.0.9.7/32 lookup 12 proto 201",
    ]
    masq = plan_eni(ports, {}, {A("10.0.8.5"): 1}, [N("10.0.0.0/16")])
    assert "ip rule pref 111 from 10.0.8.5/32 to 10.0.0.0/16 lookup 11 proto 201" in [
        r.describe() for r in masq.rules
    ]
    assert owned.ENI_TABLE_BASE == 10


# ---- the lab's VPC -----------------------------------------------------------------------------


def ec2_eni(
    eni_id: str, instance: str, index: int, addresses: list[str], groups: list[str]
) -> dict[str, Any]:
    return {
        "NetworkInterfaceId": eni_id,
        "Attachment": {"InstanceId": instance, "DeviceIndex": index, "Status": "attached"},
        "SubnetId": "subnet-a",
        "MacAddress": "02:00:00:AA:00:01",
        "PrivateIpAddress": addresses[0],
        "PrivateIpAddresses": [{"PrivateIpAddress": a} for a in addresses],
        "Groups": [{"GroupId": g} for g in groups],
    }


def test_vpc_ports_and_its_table() -> None:
    enis = [
        ec2_eni("eni-0123456789abcdef0", "i-1", 1, ["10.0.8.4", "10.0.8.5"], ["sg-pods"]),
        ec2_eni("eni-00000000000000001", "i-other", 0, ["10.0.8.9"], []),  # not a lab instance
    ]
    (port,) = plan_ports(enis, {"i-1": "node1"}, {"subnet-a": N("10.0.8.0/24")})
    assert (port.name, port.ifname, port.mac) == (
        "e" + "0123456789abcdef0"[-12:],
        "eth1",
        "02:00:00:aa:00:01",
    )
    assert str(port.primary) == "10.0.8.4/24"
    iperf = {"IpProtocol": "tcp", "FromPort": 5201, "ToPort": 5201, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}
    perms = {"sg-pods": [iperf, {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-pods"}]}]}
    table = render_nft([port], perms, N("10.0.0.0/16"), "internet")
    assert f'iifname "{port.name}" ip saddr != {{ 10.0.8.4, 10.0.8.5 }} counter drop' in table
    assert "ip saddr { 10.0.0.0/16 } meta l4proto tcp th dport 5201 accept" in table
    assert "ip saddr { 10.0.8.4, 10.0.8.5 } accept" in table  # the group's own members
    assert 'oifname "internet" ip saddr 10.0.0.0/16 counter masquerade' in table


def test_a_full_subnet_does_not_block_growth() -> None:
    full = [
        ep.Subnet("subnet-00000008", N("10.0.8.0/24"), "us-east-1a", "vpc-1", 0, (("tier", "pods"),)),
        *SUBNETS[2:],
    ]
    plan = ep.plan_node(state((eni(1, 3),), used=3, subnet_tags=(("tier", "pods"),)), full)
    assert plan.actions == (ep.Create("subnet-00000009", ("sg-00000000",), 2, 8),)


def test_release_answers_carry_the_marks_epoch_and_unwired_enis_are_not_used() -> None:
    e1, e2 = eni(1, 2), eni(2, 3)
    alloc = EniAllocator("node1", EniSettings(first_interface_index=1), wait=0.0)
    alloc.set_status(status(e1, e2, release={str(e2.addresses[2]): {"eni": e2.id, "epoch": 7}}))
    assert alloc.release_ready() == {str(e2.addresses[2]): 7}
    alloc.set_wired(frozenset({e1.mac}))  # eth2's link is not on the node yet
    (a,) = alloc.allocate("p1")
    assert a.ip == e1.addresses[1]
    with pytest.raises(IPAMExhausted):
        alloc.allocate("p2")
    alloc.set_wired(frozenset({e1.mac, e2.mac}))
    assert alloc.allocate("p2")[0].ip == e2.addresses[0]


def test_pre_allocate_zero_means_the_default() -> None:
    from podnet.config.eni import parse_eni

    assert parse_eni("eni", {"preAllocate": 0}).pre_allocate == 8


def test_the_operator_unassigns_only_for_an_answer_to_the_current_mark() -> None:
    """A "ready" written for an earlier mark of the same address (the agent has since handed it
    to a pod; its newer "used" is not here yet) must not count."""
    from podnet.operator.eni import EniOperator, _NodeMemory
    from podnet.store.client import Store
    from podnet.store.eni import EtcdEniState

    operator = EniOperator(EtcdEniState(Store(["http://127.0.0.1:9"])), None, EniSettings())  # no call made
    e = eni(1, 9)
    address = str(e.addresses[5])
    memory = _NodeMemory(marks={address: {"eni": e.id, "epoch": 4}}, epoch=4)
    spec = EniSettings(first_interface_index=1)
    stale = operator._state(spec, INSTANCE, M5, (e,), {"used": {}, "releaseReady": {address: 3}}, memory)
    assert stale.ready == frozenset()
    current = operator._state(spec, INSTANCE, M5, (e,), {"used": {}, "releaseReady": {address: 4}}, memory)
    assert current.ready == frozenset({e.addresses[5]})
    assert ep.plan_node(current, SUBNETS).actions == (ep.Unassign(e.id, (e.addresses[5],)),)


def test_a_podnetnode_eni_document_is_replaced_whole_in_one_merge_patch() -> None:
    from podnet.kube.eni import docs_of, replacing

    old = {"used": {"10.0.1.5": "a", "10.0.1.6": "b"}, "releaseReady": {"10.0.1.7": 3}}
    new = {"used": {"10.0.1.5": "a"}, "releaseReady": {}}
    patch = replacing(old, new)
    assert patch == {"used": {"10.0.1.5": "a", "10.0.1.6": None}, "releaseReady": {"10.0.1.7": None}}
    assert replacing({"enis": [1, 2], "gone": 1}, {"enis": [1]}) == {"gone": None, "enis": [1]}  # lists whole
    obj = {"spec": {"eni": {"preAllocate": 8}}, "status": {"eni": {"instanceID": "i-1"},
           "ipam": {"eni": {"used": {}}, "used": {"10.0.0.1": {"owner": "router"}}}}}  # fmt: skip
    assert docs_of(obj) == {"spec": {"preAllocate": 8}, "used": {"used": {}}, "status": {"instanceID": "i-1"}}
    assert docs_of({"spec": {}}) == {"spec": {}, "used": {}, "status": {}}
