"""The pod guard keeps pods from the control plane (issue 29, pure): from each store endpoint it
closes the client port and etcd's peer port 2380 on the same address, in the same set, behind the
same counter and drop-event reason (``pod_to_control_plane``)."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.datapath.guard import EndpointSource, apply_script, control_plane_of, plan_guard

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("endpoints", "closed"),
    [
        (["https://192.168.1.254:2379"], [("192.168.1.254", 2379), ("192.168.1.254", 2380)]),
        (["http://192.168.1.254"], [("192.168.1.254", 2379), ("192.168.1.254", 2380)]),  # no port: 2379
        (["https://10.0.0.1:12379"], [("10.0.0.1", 12379), ("10.0.0.1", 2380)]),
        (["https://[fd00::1]:2379"], [("fd00::1", 2379), ("fd00::1", 2380)]),
        (["https://etcd.example:2379"], []),  # a name: nothing to match in nft
        (
            ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
            [("10.0.0.1", 2379), ("10.0.0.1", 2380), ("10.0.0.2", 2379), ("10.0.0.2", 2380)],
        ),
    ],
)
def test_control_plane_closes_client_and_peer_ports(
    endpoints: list[str], closed: list[tuple[str, int]]
) -> None:
    assert control_plane_of(endpoints) == [(ip(a), p) for a, p in closed]


def test_the_peer_port_is_in_the_control_set_behind_the_same_drop_and_reason() -> None:
    endpoints = ["https://192.168.1.254:2379", "https://[fd00::fe]:2379"]
    script = apply_script(
        plan_guard(
            [EndpointSource("lxc1", (ip("10.244.1.2"),))],
            [ip("192.168.1.11")],
            8472,
            control_plane_of(endpoints),
        )
    )
    assert "add element inet podnet_guard control4 { 192.168.1.254 . 2379, 192.168.1.254 . 2380 }" in script
    assert "add element inet podnet_guard control6 { fd00::fe . 2379, fd00::fe . 2380 }" in script
    rules = [line for line in script.splitlines() if "@control" in line]
    for chain in ("input", "forward"):
        for family in ("ip daddr . tcp dport @control4", "ip6 daddr . tcp dport @control6"):
            mine = [r for r in rules if f" {chain} " in r and family in r]
            assert len(mine) == 2, mine  # the drop, and its NFLOG event first
            assert mine[0].endswith('prefix "podnet-drop:pod_to_control_plane"')
            assert mine[1].endswith("counter name pod_to_control_plane drop")
