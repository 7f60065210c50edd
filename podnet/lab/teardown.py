"""``podnet lab down``: remove everything a lab made, found from its state or by name prefix.

Order: the lab's own processes by recorded PID (only while each is still the same process:
same start time, or same program for old states), then every process in the cgroups the lab
made for real nodes (and those cgroups), then every namespace of the lab (any process
still inside a namespace the lab made is the lab's own and is stopped with it), then the state
directory. Works on half-built and crashed labs alike, and twice in a row.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from podnet.lab import kubenode
from podnet.lab import state as st
from podnet.util import netns


@dataclass
class TeardownReport:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)


def lab_namespaces(lab: str, state: st.LabState | None) -> list[str]:
    """The lab's namespaces: those its state lists (written before each was made); without a
    (readable) state, every ``pn-<lab>-*`` that no other lab's state lists, since ``pn-two-`` is
    also the start of lab ``two-subnets``'s namespaces."""
    if state is not None:
        return sorted(set(state.namespaces))
    others = recorded_elsewhere(lab)
    return [n for n in netns.listed(st.ns_name(lab, "")) if n not in others]


def recorded_elsewhere(lab: str) -> set[str]:
    """The namespaces other labs' states list."""
    taken: set[str] = set()
    for other in st.known_labs():
        if other == lab:
            continue
        state = st.LabState.load(other)
        if state is not None:
            taken.update(state.namespaces)
    return taken


def teardown(lab: str, before: list[object] | None = None) -> TeardownReport:
    """Remove lab ``lab``; ``before`` are callables (e.g. CNI DEL of the pods) run first, best effort."""
    state = st.LabState.load(lab)
    report = TeardownReport(lab)
    failed: list[str] = []
    for hook in before or []:
        with contextlib.suppress(Exception):  # teardown goes on whatever a hook says
            hook()  # type: ignore[operator]
    if state is not None:
        mine = [p.pid for p in state.processes if p.running()]
        netns.kill_pids(mine)
        report.processes.extend(mine)
        # real nodes: their pods' processes are in network namespaces of their own; their cgroups
        # (named after the lab) hold them all
        try:
            report.processes.extend(kubenode.remove_cgroups(state.info.get("cgroups") or []))
        except OSError as exc:  # the namespaces still go; the error is raised once they have
            failed.append(f"removing the real nodes' cgroups: {exc}")
    for name in lab_namespaces(lab, state):
        if not netns.exists(name):
            continue
        report.processes.extend(netns.pids_in(name))
        netns.remove(name)
        report.namespaces.append(name)
    if failed:
        raise OSError(f"lab {lab}: " + "; ".join(failed) + f"; run `podnet lab down {lab}` again")
    st.remove_lab_dir(lab)
    return report


def teardown_all(prefix: str = st.NS_PREFIX) -> list[TeardownReport]:
    """Every lab with state, then every leftover namespace of labs whose state is gone.

    ``prefix`` narrows both to labs whose namespaces start with it (tests use their own
    ``pn-t<random>-`` so that they never touch a lab someone else has up).
    """
    reports = [teardown(lab) for lab in st.known_labs() if st.ns_name(lab, "").startswith(prefix)]
    still_recorded = recorded_elsewhere("")
    leftovers = [n for n in netns.listed(prefix) if n not in still_recorded]
    if leftovers:
        orphan = TeardownReport("(no state)")
        for name in leftovers:
            orphan.processes.extend(netns.pids_in(name))
            netns.remove(name)
            orphan.namespaces.append(name)
        reports.append(orphan)
    return reports


def lab_exists(lab: str) -> bool:
    """Whether ``lab down LAB`` has anything to remove: a state directory or a namespace of its own."""
    return st.lab_dir(lab).exists() or bool(lab_namespaces(lab, None))
