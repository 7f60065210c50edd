"""The lab's life cycle: build the underlay, start the control plane, and tear it all down.

``bring_up`` removes whatever it made when it fails part-way (unless the lab was already up
before the call), so a failed ``lab up`` leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from podnet.lab import state as st
from podnet.lab.build import BuildReport, LabBuilder, Progress
from podnet.lab.controlplane import ensure_control_plane
from podnet.lab.teardown import TeardownReport, teardown, teardown_all
from podnet.lab.topology import Topology


def bring_up(topo: Topology, progress: Progress = lambda _m: None) -> BuildReport:
    was_up = st.LabState.load(topo.name) is not None
    builder = LabBuilder(topo, progress)
    try:
        report = builder.up()
        progress("control plane (etcd)")
        report.changes += ensure_control_plane(topo, builder.state)
    except BaseException:
        if not was_up:
            teardown(topo.name)
        raise
    return report


def bring_down(lab: str) -> TeardownReport:
    return teardown(lab)


def bring_down_all() -> list[TeardownReport]:
    return teardown_all()


def summary_rows(topo: Topology) -> list[dict[str, Any]]:
    rows = []
    for h in topo.hosts:
        addrs = ", ".join(f"{i.name} {i.address}" for i in h.interfaces)
        extra = ""
        if h.role == "node":
            pods = [p.name for p in topo.pods if p.node == h.name]
            extra = f"pods: {', '.join(pods)}" if pods else ""
        elif h.role == "controlplane":
            extra = f"etcd http://{h.primary.address.ip}:2379"
        elif h.role == "router" and h.asn:
            extra = f"AS{h.asn}"
        rows.append(
            {
                "host": h.name,
                "role": h.role,
                "namespace": st.ns_name(topo.name, h.name),
                "addresses": addrs,
                "gateway": str(h.gateway or ""),
                "extra": extra,
            }
        )
    return rows
