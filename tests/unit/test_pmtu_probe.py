"""Path MTU probing logic with a stand-in for ping (the real ping runs in the lab tests)."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.datapath.modes.base import Reach
from podnet.datapath.pmtu import probe_peers, required_size


@pytest.mark.parametrize(
    ("reach", "expected"),
    [(Reach.TUNNEL, 1500), (Reach.DIRECT, 1450), (Reach.UNDERLAY, 1450), (Reach.UNREACHABLE, None)],
)
def test_required_size_per_path(reach: Reach, expected: int | None) -> None:
    assert required_size(reach, 1450, 50) == expected


def fake_path(limit: int, alive: bool = True):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def ping(_addr: str, size: int) -> tuple[bool, str]:
        calls.append(size)
        return alive and size <= limit, "ok" if size <= limit else f"Frag needed (mtu = {limit})"

    return ping, calls


def test_fitting_path_is_probed_once() -> None:
    ping, calls = fake_path(1500)
    (res,) = probe_peers([("node2", ipaddress.ip_address("172.16.3.2"), 1500)], lambda _a: None, ping)
    assert res.ok and calls == [1500]


def test_small_path_reports_the_cached_mtu_and_what_to_set() -> None:
    ping, calls = fake_path(1400)
    (res,) = probe_peers([("node2", ipaddress.ip_address("172.16.3.2"), 1500)], lambda _a: 1400, ping)
    assert not res.ok and res.discovered == 1400 and res.reachable
    assert calls == [1500, 1500]  # retried once: the first probe teaches the kernel
    text = res.message(50)
    assert "black hole" in text and "carries only 1400 bytes" in text and "set MTU to 1400" in text


def test_dead_peer_is_not_called_an_mtu_problem() -> None:
    ping, _ = fake_path(1500, alive=False)
    (res,) = probe_peers([("node2", ipaddress.ip_address("172.16.3.2"), 1500)], lambda _a: None, ping)
    assert not res.ok and not res.reachable and "does not answer" in res.message(50)
