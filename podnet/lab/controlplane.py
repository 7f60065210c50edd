"""The lab's control-plane host: a real etcd on the underlay, the cluster store of every agent.

etcd listens on the control-plane host's underlay address (``http://<cp>:2379``) and on its
loopback; its data lives under the lab's run directory and goes with ``lab down``.
"""

from __future__ import annotations

from podnet.lab import state as st
from podnet.lab.topology import Topology

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


def etcd_endpoint(topo: Topology) -> str:
    return f"http://{topo.control_plane.primary.address.ip}:{ETCD_CLIENT_PORT}"


def ensure_control_plane(topo: Topology, state: st.LabState) -> int:
    """Start etcd unless the recorded one still runs; returns the number of changes (0 or 1)."""
    from podnet.store.server import start_etcd

    rec = state.process("etcd")
    if rec is not None and rec.running():
        return 0
    cp = topo.control_plane
    ns = st.ns_name(topo.name, cp.name)
    run = st.lab_dir(topo.name)
    ip = cp.primary.address.ip
    proc = start_etcd(
        name=f"{topo.name}-etcd",
        data_dir=run / "etcd",
        client_urls=[f"http://{ip}:{ETCD_CLIENT_PORT}", f"http://127.0.0.1:{ETCD_CLIENT_PORT}"],
        peer_url=f"http://127.0.0.1:{ETCD_PEER_PORT}",
        netns=ns,
        log_path=run / "logs" / "etcd.log",
    )
    state.add_process(st.ProcessRecord("etcd", proc.pid, ns, ["etcd"], str(proc.log_path)))
    state.info["etcd"] = etcd_endpoint(topo)
    state.save()
    return 1
