"""Node-local pod address allocation (pure): reservations, idempotence, restore, exhaustion."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.ipam.host import HostAllocator, IPAMError, IPAMExhausted

ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.mark.parametrize(
    ("cidr", "router", "first", "capacity"),
    [
        ("10.244.1.0/24", "10.244.1.1", "10.244.1.2", 253),
        ("10.244.1.0/30", "10.244.1.1", "10.244.1.2", 1),
        ("10.1.0.0/16", "10.1.0.1", "10.1.0.2", 65533),
        ("fd00:1::/120", "fd00:1::1", "fd00:1::2", 254),  # no broadcast in IPv6
    ],
)
def test_reserved_and_first(cidr: str, router: str, first: str, capacity: int) -> None:
    alloc = HostAllocator(net(cidr))
    assert alloc.router_ip == ip(router)
    assert alloc.capacity() == capacity
    assert alloc.allocate("pod-a") == ip(first)


def test_allocate_is_idempotent_and_release_frees() -> None:
    alloc = HostAllocator(net("10.244.1.0/24"))
    a = alloc.allocate("a")
    assert alloc.allocate("a") == a
    b = alloc.allocate("b")
    assert b != a
    assert alloc.release("a") == a
    assert alloc.release("a") is None  # twice is fine
    assert alloc.allocate("c") == a  # lowest free comes back
    assert alloc.allocated() == {"b": b, "c": a}


def test_never_hands_out_reserved_addresses() -> None:
    cidr = net("10.9.0.0/28")
    alloc = HostAllocator(cidr, reserved=[ip("10.9.0.5")])
    got = {alloc.allocate(f"p{i}") for i in range(alloc.capacity())}
    assert got.isdisjoint({cidr.network_address, cidr.broadcast_address, ip("10.9.0.1"), ip("10.9.0.5")})
    assert len(got) == 12


def test_exhaustion_names_cidr_and_size() -> None:
    alloc = HostAllocator(net("10.9.0.0/29"))
    for i in range(5):
        alloc.allocate(f"p{i}")
    with pytest.raises(IPAMExhausted) as err:
        alloc.allocate("one-too-many")
    assert "10.9.0.0/29 is full" in str(err.value)
    assert "5 assignable addresses (8 total, 3 reserved)" in str(err.value)
    assert alloc.allocate("p0") == ip("10.9.0.2")  # existing owners still answered


def test_restore_after_restart() -> None:
    before = HostAllocator(net("10.244.2.0/24"))
    for owner in ("a", "b", "c"):
        before.allocate(owner)
    before.release("b")
    after = HostAllocator(net("10.244.2.0/24"))
    after.restore(before.allocated())
    assert after.allocated() == before.allocated()
    assert after.allocate("d") == ip("10.244.2.3")  # the hole b left


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("10.244.3.7", "outside pod CIDR 10.244.2.0/24"),
        ("10.244.2.1", "reserved"),
        ("10.244.2.255", "reserved"),
        ("10.244.2.2", "already held by a"),
    ],
)
def test_restore_refuses_bad_addresses(requested: str, message: str) -> None:
    alloc = HostAllocator(net("10.244.2.0/24"))
    alloc.allocate("a")
    with pytest.raises(IPAMError, match=message):
        alloc.restore({"x": ip(requested)})


def test_too_small_cidr_refused() -> None:
    with pytest.raises(IPAMError, match=r"10\.0\.0\.0/31 is too small"):
        HostAllocator(net("10.0.0.0/31"))


def test_multi_cidr_spills_over_and_reports_all_full() -> None:
    alloc = MultiCIDRAllocator([net("10.0.0.0/30"), net("10.0.1.0/30")])
    first = alloc.allocate("a")[0]
    second = alloc.allocate("b")[0]
    assert (first.ip, first.gateway) == (ip("10.0.0.2"), ip("10.0.0.1"))
    assert (second.ip, second.cidr, second.gateway) == (ip("10.0.1.2"), net("10.0.1.0/30"), ip("10.0.1.1"))
    assert alloc.allocate("a") == (first,)
    with pytest.raises(IPAMExhausted, match=r"10.0.0.0/30 \(1 addresses\), 10.0.1.0/30"):
        alloc.allocate("c")
    assert alloc.release("a") is True
    assert alloc.release("a") is False


def test_multi_cidr_dual_stack_gives_one_per_family() -> None:
    alloc = MultiCIDRAllocator([net("10.0.0.0/24"), net("fd00::/120")])
    got = alloc.allocate("a")
    assert [a.ip for a in got] == [ip("10.0.0.2"), ip("fd00::2")]
    restored = MultiCIDRAllocator([net("10.0.0.0/24"), net("fd00::/120")])
    restored.restore(alloc.allocated())
    assert restored.allocate("a") == got
