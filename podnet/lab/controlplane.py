"""The lab's control-plane host: a real etcd on the underlay, the cluster store of every agent.

etcd listens on the control-plane host's underlay address (``https://<cp>:2379``, mutual TLS
with the lab's CA, ``podnet.lab.pki``; ``controlPlane.etcdTLS: false`` for plain http) and on its
loopback; its data lives under the lab's run directory and goes with ``lab down``. With
``controlPlane.etcdMembers: 3`` (or 5) each member runs on a control-plane host of its own
(``cp``, ``cp2``, ``cp3``), so a member can be killed like a machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from podnet.datapath.guard import ETCD_CLIENT_PORT, ETCD_PEER_PORT  # the ports the pod guard closes
from podnet.lab import pki
from podnet.lab import state as st
from podnet.lab.topology import Topology
from podnet.lab.topomodel import url_host
from podnet.store.client import Store, TlsFiles
from podnet.util import netns


def etcd_endpoint(topo: Topology) -> str:
    """The first member's client URL."""
    return etcd_endpoints(topo)[0]


def etcd_endpoints(topo: Topology) -> list[str]:
    """Every member's client URL, in member order (what agents and the operator are given)."""
    return [f"{scheme(topo)}://{url_host(cp.primary.ip)}:{ETCD_CLIENT_PORT}" for cp in topo.control_planes]


def scheme(topo: Topology) -> str:
    return "https" if topo.etcd_tls else "http"


def client_tls(topo: Topology, who: str, make: bool = True) -> TlsFiles | None:
    """A client certificate for ``who`` (a node's name, ``operator``, ``lab``) when etcd uses TLS
    (``make=False``: its file names only, nothing is written)."""
    return pki.client_tls(topo.name, who, make) if topo.etcd_tls else None


def member_process(index: int, host: str) -> str:
    """The lab's process name of member ``index`` (the first keeps the name "etcd")."""
    return "etcd" if index == 0 else f"etcd-{host}"


def ensure_control_plane(topo: Topology, state: st.LabState) -> int:
    """Start every etcd member whose recorded process is not running; returns how many started.

    Members of a cluster are started together and then waited for together: none is healthy
    before a quorum runs. A restarted member keeps its data directory and rejoins."""
    from podnet.store.server import start_etcd, wait_healthy

    members = topo.control_planes
    run = st.lab_dir(topo.name)
    peers = {
        f"{topo.name}-{cp.name}": f"{scheme(topo)}://{url_host(cp.primary.ip)}:{ETCD_PEER_PORT}"
        for cp in members
    }
    started = []
    for i, cp in enumerate(members):
        rec = state.process(member_process(i, cp.name))
        if rec is not None and rec.running():
            continue
        ns = st.ns_name(topo.name, cp.name)
        ip = cp.primary.ip
        member = f"{topo.name}-{cp.name}"
        tls = (
            pki.ensure_cert(topo.name, f"etcd-{cp.name}", (str(ip), "127.0.0.1"), server=True)
            if topo.etcd_tls
            else None
        )
        proc = start_etcd(
            name=member,
            data_dir=run / ("etcd" if i == 0 else f"etcd-{cp.name}"),
            client_urls=[
                f"{scheme(topo)}://{url_host(ip)}:{ETCD_CLIENT_PORT}",
                f"{scheme(topo)}://127.0.0.1:{ETCD_CLIENT_PORT}",
            ],
            peer_url=peers[member],
            netns=ns,
            log_path=run / "logs" / f"{member_process(i, cp.name)}.log",
            initial_cluster=peers,
            token=f"podnet-{topo.name}",
            wait=False,
            tls=tls,
        )
        state.add_process(
            st.ProcessRecord(member_process(i, cp.name), proc.pid, ns, ["etcd"], str(proc.log_path))
        )
        started.append(proc)
    for proc in started:
        wait_healthy(proc)
    state.info["etcd"] = etcd_endpoint(topo)
    state.info["etcdEndpoints"] = etcd_endpoints(topo)
    tools = client_tls(topo, "lab")
    state.info["etcdTLS"] = dataclasses.asdict(tools) if tools else None
    state.save()
    return len(started)


@contextlib.contextmanager
def lab_store(topo: Topology) -> Iterator[Store]:
    """A client of the lab's etcd, as the lab (its own certificate), from the first control-plane
    host's namespace: the thread stays in it until the block ends."""
    cp = topo.control_planes[0]
    with (
        netns.entered(st.ns_name(topo.name, cp.name)),
        Store(etcd_endpoints(topo), tls=client_tls(topo, "lab")) as store,
    ):
        yield store
