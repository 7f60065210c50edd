"""``podnet connectivity test``: real traffic over the lab's datapath, one check per path kind.

Checks: pod-to-pod on one node, pod-to-pod across every pair of nodes, pod to its own node,
node to a remote pod, pod to the lab's external host, and the largest packet that fits the route
MTU with DF set in both directions. TCP checks move bytes through sockets opened inside the
namespaces (``podnet.verify.probe``); the MTU check is ``ping -M do``. Each failure is walked by
``podnet.verify.diagnose`` to name the hop where the packet stops. The whole run has a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from podnet.verify.diagnose import Diagnoser
from podnet.verify.explain import Drop
from podnet.verify.probe import ProbeResult, ping, tcp_probe
from podnet.verify.view import PathView, Place, ViewError

DEFAULT_DEADLINE = 90.0
ICMP_IPV4_HEADERS = 28  # IPv4 20 + ICMP 8: ping -s payload = packet size - 28
ICMP_IPV6_HEADERS = 48  # IPv6 40 + ICMPv6 8


@dataclass(frozen=True)
class CheckSpec:
    """One planned check: from a place to a place, by TCP or by a full-size DF ping."""

    name: str
    src: Place
    dst: Place
    size: int | None = None  # set for the MTU check: the IP packet size


@dataclass(frozen=True)
class CheckResult:
    spec: CheckSpec
    status: str  # pass | fail | skipped
    detail: str
    drop: Drop | None = None

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.spec.name,
            "from": self.spec.src.describe(),
            "to": self.spec.dst.describe(),
            "size": self.spec.size,
            "status": self.status,
            "detail": self.detail,
            "stoppedAt": self.drop.to_json() if self.drop else None,
        }


@dataclass(frozen=True)
class ConnectivityReport:
    lab: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> dict[str, Any]:
        failed = [r for r in self.results if r.status == "fail"]
        return {
            "lab": self.lab,
            "ok": self.ok,
            "passed": sum(r.status == "pass" for r in self.results),
            "failed": len(failed),
            "skipped": sum(r.status == "skipped" for r in self.results),
            "results": [r.to_json() for r in self.results],
        }


def plan_checks(view: PathView, diagnoser: Diagnoser) -> list[CheckSpec]:
    """The checks this lab allows, in each family its pods have an address of (IPv6 ones named
    ``IPv6 ...``): a check needs its pods (same-node needs two on one node) and its hosts'
    addresses of that family."""
    specs: list[CheckSpec] = []
    for family in (4, 6):
        specs += _family_checks(view, diagnoser, family)
    return specs


def _family_checks(view: PathView, diagnoser: Diagnoser, family: int) -> list[CheckSpec]:
    prefix = "" if family == 4 else "IPv6 "
    nodes = [n for n in view.nodes if view.pods_on(n)]
    pod = {n: p for n in nodes if (p := _place(view, view.pods_on(n)[0], family)) is not None}
    node = {n: p for n in pod if (p := _place(view, n, family)) is not None}
    specs: list[CheckSpec] = []
    for n in pod:
        same = [p for name in view.pods_on(n)[:2] if (p := _place(view, name, family)) is not None]
        if len(same) == 2:
            specs.append(CheckSpec(f"{prefix}pod-to-pod same node", same[0], same[1]))
    specs += [
        CheckSpec(f"{prefix}pod-to-pod across nodes", pod[a], pod[b]) for a in pod for b in pod if a != b
    ]
    specs += [CheckSpec(f"{prefix}pod-to-own-node", pod[n], node[n]) for n in node]
    names = list(node)
    for i, n in enumerate(names):
        other = names[(i + 1) % len(names)]
        if other != n or len(names) == 1:
            specs.append(CheckSpec(f"{prefix}node-to-pod", node[n], pod[other]))
    for ext in view.external_hosts():
        if (world := _place(view, ext, family)) is not None:
            specs += [CheckSpec(f"{prefix}pod-to-external", pod[n], world) for n in pod]
    if len(pod) >= 2:
        a, b = list(pod.values())[:2]
        specs.append(CheckSpec(f"{prefix}full-size DF packet", a, b, diagnoser.full_size(a.host, b.ip)))
        specs.append(CheckSpec(f"{prefix}full-size DF packet", b, a, diagnoser.full_size(b.host, a.ip)))
    return specs


def _place(view: PathView, target: str, family: int) -> Place | None:
    """A pod or host by its address of ``family``; None when it has none."""
    try:
        return view.resolve(target, family)
    except ViewError:
        return None


def run_check(view: PathView, spec: CheckSpec) -> ProbeResult:
    if spec.name.endswith("pod-to-own-node"):  # the pod guard lets pods reach their node by ICMP only
        return ping(view.ns(spec.src.host), str(spec.dst.ip), count=2, timeout=1.0)
    if spec.size is not None:
        return ping(
            view.ns(spec.src.host),
            str(spec.dst.ip),
            count=2,
            timeout=1.0,
            size=spec.size - (ICMP_IPV4_HEADERS if spec.dst.ip.version == 4 else ICMP_IPV6_HEADERS),
            dont_fragment=True,
        )
    return tcp_probe(view.ns(spec.src.host), view.ns(spec.dst.host), str(spec.dst.ip), timeout=2.0)


def run_checks(
    view: PathView,
    deadline: float = DEFAULT_DEADLINE,
    on_result: Callable[[CheckResult], None] = lambda _r: None,
) -> ConnectivityReport:
    diagnoser = Diagnoser(view)
    results = list(
        _run(view, diagnoser, plan_checks(view, diagnoser), time.monotonic() + deadline, on_result)
    )
    return ConnectivityReport(view.name, tuple(results))


def _run(
    view: PathView,
    diagnoser: Diagnoser,
    specs: list[CheckSpec],
    until: float,
    on_result: Callable[[CheckResult], None],
) -> Iterator[CheckResult]:
    for spec in specs:
        if time.monotonic() > until:
            result = CheckResult(spec, "skipped", "the run's time budget is spent")
        else:
            result = _one(view, diagnoser, spec)
        on_result(result)
        yield result


def _one(view: PathView, diagnoser: Diagnoser, spec: CheckSpec) -> CheckResult:
    res = run_check(view, spec)
    if res.ok:
        return CheckResult(spec, "pass", res.detail)
    # the tables first; probes are followed when they see nothing wrong (or an MTU, which a
    # tunnel's fragmenting may turn into "degraded"): a table verdict stands on its own
    diag = diagnoser.diagnose(spec.src, spec.dst, spec.size, probe=False)
    if diag.drop is None or diag.drop.kind == "mtu":
        diag = diagnoser.diagnose(spec.src, spec.dst, spec.size)
    if diag.drop is not None:
        return CheckResult(spec, "fail", f"{res.detail}; {diag.drop.reason}", diag.drop)
    hint = (
        "the kernel's routes, neighbours and MTUs look right on every hop and the diagnose probes (ICMP) "
        f"came back: this check's own traffic is lost (a filter on its protocol?); `podnet diagnose "
        f"{spec.src.host} {spec.dst.host}` and `podnet drops` show more"
    )
    return CheckResult(spec, "fail", f"{res.detail}; {hint}")
