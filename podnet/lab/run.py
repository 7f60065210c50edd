"""The lab's life cycle: build the underlay, start the control plane, and tear it all down.

``bring_up`` removes whatever it made when it fails part-way (unless the lab was already up
before the call), so a failed ``lab up`` leaves nothing behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from typing import Any

from podnet.lab import cluster as cl
from podnet.lab import kubeinstall, kubenode
from podnet.lab import state as st
from podnet.lab.bird import ensure_router_bgp, validate_router_bgp, wait_bgp_converged
from podnet.lab.build import BuildReport, LabBuilder, Progress
from podnet.lab.cloud import ensure_cloud
from podnet.lab.controlplane import ensure_control_plane
from podnet.lab.kubeapi import ensure_kube_control_plane
from podnet.lab.kubeapi import wanted as kube_wanted
from podnet.lab.teardown import TeardownReport, teardown, teardown_all
from podnet.lab.topology import Topology
from podnet.lab.topomodel import url_host


def bring_up(
    topo: Topology,
    progress: Progress = lambda _m: None,
    cluster: bool = True,
    overrides: Sequence[str] = (),
) -> BuildReport:
    """Build the lab; with ``cluster`` also the operator, the agents and the pods (CNI ADD).

    ``topo.cluster`` is the effective cluster settings (the file's, with ``overrides`` -- the
    ``--set`` pairs -- applied); both go into the state, where ``LabView`` reads them back.
    """
    if cluster:
        try:
            cl.validate_cluster_config(topo)  # before anything exists
            validate_router_bgp(topo)  # bgp: node peers are routers with the right ASN
            kubenode.check(topo)  # real kubelets: the Kubernetes datastore
            kubeinstall.check(topo)  # podnet from its manifests: every node real
        except BaseException:
            if st.LabState.load(topo.name) is None:  # only the certificates validation made
                shutil.rmtree(st.lab_dir(topo.name), ignore_errors=True)
            raise
    started = time.monotonic()
    existing = st.LabState.load(topo.name)
    was_up = existing is not None and existing.status == "up"
    builder = LabBuilder(topo, progress)
    try:
        builder.state.info["cluster"] = dict(topo.cluster)
        builder.state.info["overrides"] = list(overrides)
        builder.state.save()
        report = builder.up()
        if topo.cloud is not None:
            progress("cloud (EC2 API, VPC)")
            report.changes += ensure_cloud(topo, builder.state)
        progress("control plane (etcd)")
        report.changes += ensure_control_plane(topo, builder.state)
        if kube_wanted(topo):
            progress("control plane (kube-apiserver)")
            report.changes += ensure_kube_control_plane(topo, builder.state)
        if cluster:
            progress("BGP on routers (BIRD)")
            report.changes += ensure_router_bgp(topo, builder.state)
        if cluster:
            _start_cluster(topo, builder.state, report, progress)
        report.seconds = time.monotonic() - started
    except BaseException:
        if not was_up:
            bring_down(topo.name)
        raise
    return report


def _start_cluster(topo: Topology, state: st.LabState, report: BuildReport, progress: Progress) -> None:
    if topo.podnet_install != "lab":
        _start_kube_install(topo, state, report, progress)
        return
    progress("operator")
    report.changes += cl.ensure_operator(topo, state)
    progress(f"agents on {len(topo.nodes)} nodes")
    for node in topo.nodes:
        report.changes += cl.start_agent(topo, state, node)
    cl.wait_agents_ready(topo, state)
    cl.wait_converged(topo)
    if any(r.asn for r in topo.routers):
        wait_bgp_converged(topo)
    report.changes += cl.ensure_cni_installed(topo.name)
    if topo.namespaces and not kube_wanted(topo):  # etcd: namespaces' labels for NetworkPolicy
        cl.put_namespace_labels(topo)
    if topo.pods:
        progress(f"{len(topo.pods)} pods (CNI ADD)")
    for pod in topo.pods:
        report.changes += cl.ensure_pod(topo, state, pod)
    real = kubenode.wanted(topo)
    if real:
        progress(f"real kubelets on {', '.join(h.name for h in real)} (containerd, kube-scheduler)")
        report.changes += kubenode.ensure_workload_control(topo, state)
        for host in real:
            report.changes += kubenode.ensure_real_node(topo, state, host)
        kubenode.wait_ready(topo)
    state.info["clusterStarted"] = True
    state.save()


def _start_kube_install(topo: Topology, state: st.LabState, report: BuildReport, progress: Progress) -> None:
    """Real nodes that start without podnet; with ``manifests`` podnet then comes as a user
    installs it (kubectl apply), and the lab waits until it runs everywhere."""
    real = kubenode.wanted(topo)
    progress(f"real kubelets on {', '.join(h.name for h in real)} (containerd, podnet's image imported)")
    report.changes += kubenode.ensure_workload_control(topo, state)
    for host in real:
        report.changes += kubenode.ensure_real_node(topo, state, host)
    kubenode.wait_ready(topo, registered=True)
    if topo.podnet_install == "manifests":
        progress("podnet: kubectl apply -f deploy/kubernetes/podnet.yaml (DaemonSet, operator)")
        kubeinstall.apply(topo)
        kubeinstall.wait_rolled_out(topo)
        cl.wait_agents_ready(topo, state)
        cl.wait_converged(topo)
        kubenode.wait_ready(topo)
    state.info["clusterStarted"] = True
    state.save()


def bring_down(lab: str) -> TeardownReport:
    """CNI DEL of the pods while the agents still run, then everything else."""

    def delete_pods() -> None:
        state = st.LabState.load(lab)
        if state is not None:
            cl.delete_pods(lab, state)

    return teardown(lab, before=[delete_pods])


def bring_down_all() -> list[TeardownReport]:
    return teardown_all()


def summary_rows(topo: Topology) -> list[dict[str, Any]]:
    rows = []
    for h in topo.hosts:
        addrs = ", ".join(
            f"{i.name} " + " ".join(str(a) for a in (i.address, i.ipv6) if a) for i in h.interfaces
        )
        extra = ""
        if h.role == "node":
            pods = [p.name for p in topo.pods if p.node == h.name]
            extra = f"pods: {', '.join(pods)}" if pods else ""
        elif h.role == "controlplane":
            extra = f"etcd {'https' if topo.etcd_tls else 'http'}://{url_host(h.primary.ip)}:2379"
        elif h.role == "router" and h.asn:
            extra = f"AS{h.asn}"
        rows.append(
            {
                "host": h.name,
                "role": h.role,
                "namespace": st.ns_name(topo.name, h.name),
                "addresses": addrs,
                "gateway": " ".join(str(g) for g in (h.gateway, h.gateway6) if g is not None),
                "extra": extra,
            }
        )
    return rows
