"""What the agent needs once, at start: its node lock, its identity, etcd's client and TLS files,
the pods' first route MTU; and the check that the datastore's pod CIDRs still match the ones in
use. ``AgentError`` is what start-up raises when the node cannot be served, with the fix."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from podnet.agent.underlay import Underlay
from podnet.config import AgentConfig
from podnet.datapath import mtu
from podnet.datapath.modes import mode_for
from podnet.ipam.base import Allocator
from podnet.store.client import Backoff, OutageLog, Store, StoreError, TlsFiles
from podnet.store.nodes import NodeRecord

log = logging.getLogger("podnet.agent")

STORE_CONNECT_TIMEOUT = 60.0


class AgentError(RuntimeError):
    """The agent cannot start; the message says what to fix."""


def cidr_change(allocator: Allocator | None, seen: NodeRecord | None) -> str:
    """What to report when the datastore now gives this node other pod CIDRs than the ones its
    pods use (a changed Node annotation, a hand-edited record): never applied under running pods."""
    if allocator is None or seen is None or not seen.node.pod_cidrs:
        return ""
    now, used = set(seen.node.pod_cidrs), set(allocator.cidrs)
    if now == used:
        return ""
    listed = ", ".join(map(str, sorted(now, key=str)))
    kept = ", ".join(map(str, allocator.cidrs))
    return (
        f"the datastore now gives this node pod CIDR(s) {listed}; podnet keeps {kept} under its running "
        "pods (a pod CIDR is not changed in place): drain the node and restart its agent to take the new one"
    )


def etcd_tls(config: AgentConfig) -> TlsFiles | None:
    """The agent's mutual-TLS files for etcd, when configured."""
    if config.etcd_trusted_ca_file and config.etcd_cert_file and config.etcd_key_file:
        return TlsFiles(
            str(config.etcd_trusted_ca_file), str(config.etcd_cert_file), str(config.etcd_key_file)
        )
    return None


def connect_etcd(endpoints: Sequence[str], tls: TlsFiles | None = None) -> Store:
    if not endpoints:
        raise AgentError("no etcd endpoints: set etcd.endpoints (e.g. http://10.0.0.1:2379)")
    deadline = time.monotonic() + STORE_CONNECT_TIMEOUT
    store = Store(list(endpoints), tls=tls)
    outage, backoff = OutageLog(log, f"connecting to etcd at {', '.join(endpoints)}"), Backoff(0.25, 5.0)
    while True:
        try:
            store.get("/podnet/v1/ping")
            outage.recovered()
            return store
        except StoreError as exc:
            if time.monotonic() > deadline:
                store.close()
                raise AgentError(f"cannot reach etcd at {', '.join(endpoints)}: {exc}") from exc
            outage.failed(exc)
            time.sleep(backoff.next())


def mode_route_mtu(config: AgentConfig, underlay: Underlay) -> int:
    """The pods' route MTU before the first round (it then follows every round's plan)."""
    family = 6 if config.underlay_protocol == "ipv6" or underlay.ipv4 is None else 4
    return mtu.route_mtu(config, mode_for(config), underlay.mtu, family)


def hold_node_lock(state_dir: Path) -> int:
    """An exclusive lock on ``<state_dir>/agent.lock`` for the agent's lifetime (the kernel drops it
    when the process dies, kill -9 included); ``AgentError`` when another agent holds it."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "agent.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AgentError(
            f"another podnet agent (pid {holder}) runs for this node with state directory {state_dir}; "
            "stop it first (nothing was changed)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def agent_identity(config: AgentConfig) -> str:
    """Who serves a node, stable across restarts of the same agent: machine, host name, state dir."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()[:12]
    except OSError:
        machine = "?"
    return f"{socket.gethostname()}/{machine}:{config.state_dir.resolve()}"
