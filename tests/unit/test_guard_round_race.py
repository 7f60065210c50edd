"""A CNI ADD that lands while a round runs: the round planned the guard's table from the pods of
its start, the ADD let the new pod's addresses in at once, and applying the round's table must not
leave the new pod locked out (it used to, until the next round: a re-made pod unreachable both
ways in the netpol tier's "pods made after the policy" cases)."""

from __future__ import annotations

import ipaddress

from podnet.agent.pod_guard import Guard
from podnet.datapath.guard import EndpointSource, plan_guard

OLD = EndpointSource("lxc-old", (ipaddress.ip_address("10.244.1.5"),))
NEW = EndpointSource("lxc-new", (ipaddress.ip_address("10.244.1.9"),))


def test_a_pod_recorded_during_the_round_stays_allowed() -> None:
    applied: list[str] = []
    recorded = [OLD]
    guard = Guard(lambda: None, sources=lambda: list(recorded), apply=applied.append)
    plan = plan_guard([OLD], [], None, [])  # planned before the ADD
    guard.applied = plan
    recorded.append(NEW)  # the ADD records the pod and lets it in at once
    guard.allow(NEW)
    guard.after_round(None, type("R", (), {"guard": plan})(), [])  # type: ignore[arg-type]
    table = applied.index(next(s for s in applied if "add table" in s or "flush" in s))
    later = applied[table + 1 :]
    assert any("10.244.1.9" in s and "add element" in s for s in later), applied
