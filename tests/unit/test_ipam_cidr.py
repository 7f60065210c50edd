"""Pool validation and per-node subnet carving (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.ipam.cidr import CIDRError, next_free_subnet, parse_cidr, parse_pool_spec

net = ipaddress.ip_network


@pytest.mark.parametrize(
    ("pools", "mask", "first", "capacity"),
    [
        (["10.244.0.0/16"], 24, ["10.244.0.0/24", "10.244.1.0/24"], 256),
        (["10.0.0.0/23", "10.9.0.0/23"], 24, ["10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/24"], 4),
        (["192.168.0.0/24"], 26, ["192.168.0.0/26", "192.168.0.64/26"], 4),
        (["fd00:10::/112"], 120, ["fd00:10::/120", "fd00:10::100/120"], 256),
    ],
)
def test_carving(pools: list[str], mask: int, first: list[str], capacity: int) -> None:
    family = net(pools[0]).version
    spec = parse_pool_spec(pools, mask, family=family)
    carved = list(spec.subnets())
    assert [str(s) for s in carved[: len(first)]] == first
    assert len(carved) == spec.capacity() == capacity
    assert len(set(carved)) == capacity


@pytest.mark.parametrize(
    ("pools", "mask", "message"),
    [
        ([], 24, "empty"),
        (["10.244.0.0/33"], 24, "'10.244.0.0/33'"),
        (["10.244.1.1/16"], 24, "'10.244.1.1/16'"),
        (["banana"], 24, "'banana'"),
        (["10.244.0.0/24"], 24, "mask size /24 does not fit cluster pool 10.244.0.0/24"),
        (["10.244.0.0/24"], 16, "must be longer than /24"),
        (["10.244.0.0/16"], 33, "at most /32"),
        (["10.244.0.0/16", "10.244.8.0/21"], 24, "10.244.0.0/16 and 10.244.8.0/21 overlap"),
        (["10.0.0.0/24", "10.1.0.0/24", "10.0.0.128/25"], 26, "10.0.0.0/24 and 10.0.0.128/25 overlap"),
        (["fd00::/64"], 120, "IPv6, expected IPv4"),
    ],
)
def test_validation_refuses(pools: list[str], mask: int, message: str) -> None:
    with pytest.raises(CIDRError) as err:
        parse_pool_spec(pools, mask)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ([], "10.0.0.0/24"),
        (["10.0.0.0/24"], "10.0.1.0/24"),
        (["10.0.1.0/24"], "10.0.0.0/24"),
        (["10.0.0.0/24", "10.0.1.0/24"], "10.9.0.0/24"),
        (["10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/24"], "10.9.1.0/24"),
        (["10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/24", "10.9.1.0/24"], None),
        (["172.16.0.0/24"], "10.0.0.0/24"),  # foreign CIDRs do not matter
    ],
)
def test_next_free_subnet(taken: list[str], expected: str | None) -> None:
    spec = parse_pool_spec(["10.0.0.0/23", "10.9.0.0/23"], 24)
    free = next_free_subnet(spec, [net(t) for t in taken])
    assert (str(free) if free else None) == expected


@pytest.mark.parametrize(
    ("cidr", "inside"),
    [
        ("10.244.3.0/24", True),
        ("10.244.3.0/25", False),
        ("10.245.0.0/24", False),
        ("fd00::/120", False),
    ],
)
def test_pool_contains(cidr: str, inside: bool) -> None:
    assert parse_pool_spec(["10.244.0.0/16"], 24).contains(net(cidr)) is inside


def test_parse_cidr_names_what() -> None:
    with pytest.raises(CIDRError, match="invalid native routing CIDR 'x/8'"):
        parse_cidr("x/8", "native routing CIDR")
