"""diff(current, desired): adds, replaces and deletes in the order the kernel needs."""

from __future__ import annotations

import ipaddress

from podnet.datapath.modes.base import DesiredState, FdbEntry, Neighbour, Route
from podnet.datapath.reconcile import CurrentState, Op, diff, in_scope

ip = ipaddress.ip_address
net = ipaddress.ip_network

R2 = Route(net("10.244.2.0/24"), "podnet_vxlan", ip("10.244.2.1"), True, ip("10.244.1.1"), 1450)
N2 = Neighbour(ip("10.244.2.1"), "02:00:00:00:00:02", "podnet_vxlan")
F2 = FdbEntry("02:00:00:00:00:02", ip("172.16.2.3"), "podnet_vxlan")
R3 = Route(net("10.244.3.0/24"), "podnet_vxlan", ip("10.244.3.1"), True, ip("10.244.1.1"), 1450)
N3 = Neighbour(ip("10.244.3.1"), "02:00:00:00:00:03", "podnet_vxlan")
F3 = FdbEntry("02:00:00:00:00:03", ip("172.16.2.4"), "podnet_vxlan")


def ops(changes: tuple) -> list[tuple[str, str]]:
    return [(c.op.value, type(c.obj).__name__) for c in changes]


def test_empty_to_desired_adds_neigh_fdb_then_route() -> None:
    changes = diff(CurrentState(), DesiredState(routes=(R2,), neighbours=(N2,), fdb=(F2,)))
    assert ops(changes) == [("add", "Neighbour"), ("add", "FdbEntry"), ("add", "Route")]


def test_equal_states_need_nothing() -> None:
    desired = DesiredState(routes=(R2,), neighbours=(N2,), fdb=(F2,))
    assert diff(CurrentState(routes=(R2,), neighbours=(N2,), fdb=(F2,)), desired) == ()


def test_changed_objects_are_replaced_and_orphans_deleted_route_first() -> None:
    current = CurrentState(routes=(R2, R3), neighbours=(N2, N3), fdb=(F2, F3))
    moved_fdb = FdbEntry(F2.lladdr, ip("172.16.2.99"), F2.dev)
    new_mtu = Route(R2.dst, R2.dev, R2.gateway, True, R2.src, 1400)
    changes = diff(current, DesiredState(routes=(new_mtu,), neighbours=(N2,), fdb=(moved_fdb,)))
    assert [(c.op, c.obj) for c in changes] == [
        (Op.REPLACE, moved_fdb),
        (Op.REPLACE, new_mtu),
        (Op.DELETE, R3),
        (Op.DELETE, F3),
        (Op.DELETE, N3),
    ]


def test_neighbour_with_new_mac_is_replaced() -> None:
    changed = Neighbour(N2.dst, "02:00:00:00:00:22", N2.dev)
    assert [
        (c.op, c.obj) for c in diff(CurrentState(neighbours=(N2,)), DesiredState(neighbours=(changed,)))
    ] == [(Op.REPLACE, changed)]


def test_scope_excludes_endpoint_routes_and_foreign_protocols() -> None:
    assert in_scope(R2)
    assert not in_scope(Route(net("10.244.1.10/32"), "lxc0123456789a"))
    assert not in_scope(Route(net("10.9.0.0/16"), "eth0", protocol=4))
