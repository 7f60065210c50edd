"""``podnet lab down``: remove everything a lab made, found from its state and by name prefix.

Order: the lab's own processes by recorded PID (only while each still runs the recorded
program), then every namespace of the lab (any process still inside a namespace the lab made is
the lab's own and is stopped with it), then the state directory. Works on half-built and crashed
labs alike, and twice in a row.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from podnet.lab import state as st
from podnet.util import netns


@dataclass
class TeardownReport:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)


def lab_namespaces(lab: str, state: st.LabState | None) -> list[str]:
    """The lab's namespaces: those its state lists, plus any ``pn-<lab>-*`` the state names a host of."""
    recorded = list(state.namespaces) if state else []
    prefix = st.ns_name(lab, "")
    on_disk = [
        n for n in netns.listed(prefix) if n in recorded or state is None or _host_of(n, prefix, state)
    ]
    return sorted(set(recorded) | set(on_disk))


def _host_of(ns: str, prefix: str, state: st.LabState) -> bool:
    suffix = ns[len(prefix) :]
    return suffix in state.info.get("hosts", []) or suffix in state.info.get("pods", [])


def teardown(lab: str, before: list[object] | None = None) -> TeardownReport:
    """Remove lab ``lab``; ``before`` are callables (e.g. CNI DEL of the pods) run first, best effort."""
    state = st.LabState.load(lab)
    report = TeardownReport(lab)
    for hook in before or []:
        with contextlib.suppress(Exception):  # teardown goes on whatever a hook says
            hook()  # type: ignore[operator]
    if state is not None:
        mine = [p.pid for p in state.processes if p.running()]
        netns.kill_pids(mine)
        report.processes.extend(mine)
    for name in lab_namespaces(lab, state):
        report.processes.extend(netns.pids_in(name))
        netns.remove(name)
        report.namespaces.append(name)
    st.remove_lab_dir(lab)
    return report


def teardown_all() -> list[TeardownReport]:
    """Every lab with state, then every leftover ``pn-*`` namespace of labs whose state is gone."""
    reports = [teardown(lab) for lab in st.known_labs()]
    leftovers = netns.listed(st.NS_PREFIX)
    if leftovers:
        orphan = TeardownReport("(no state)")
        for name in leftovers:
            orphan.processes.extend(netns.pids_in(name))
            netns.remove(name)
            orphan.namespaces.append(name)
        reports.append(orphan)
    return reports
