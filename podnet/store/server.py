"""Start and stop a real etcd (Debian ``etcd-server``, 3.4) as a child process, optionally in a netns.

One member per call: a single-member cluster, or (``initial_cluster``) a member of a cluster whose
members are started one after the other with ``wait=False`` and then waited for together
(``wait_healthy``), since none is healthy before a quorum runs. With ``netns`` the command is
``ip netns exec NAME etcd ...``
(``ip`` execs etcd, so the recorded PID is etcd's own). Startup waits for ``/health`` to answer
true, bounded by a timeout; a failure names the log file. ``stop()`` acts only on the recorded PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from podnet.store.client import TlsFiles
from podnet.util import netns as netns_util

ETCD_BINARY = "etcd"
DEFAULT_START_TIMEOUT = 15.0


class EtcdStartError(RuntimeError):
    """etcd did not come up; the message names the log file to read."""


@dataclass(frozen=True)
class EtcdProcess:
    name: str
    pid: int
    client_urls: tuple[str, ...]
    data_dir: Path
    log_path: Path
    netns: str | None = None
    tls: TlsFiles | None = None  # the member's certificate: also good as a client one for /health

    @property
    def endpoint(self) -> str:
        return self.client_urls[0]

    def alive(self) -> bool:
        return _is_our_etcd(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the recorded PID (only if it is still an etcd), SIGKILL after ``grace`` seconds."""
        stop_pid(self.pid, grace)


def _is_our_etcd(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z" and any(Path(arg.decode(errors="replace")).name == ETCD_BINARY for arg in cmdline[:1])


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, grace: float = 5.0) -> None:
    """Stop the etcd with ``pid``; does nothing if that PID is gone or is no longer an etcd."""
    if not _is_our_etcd(pid):
        _reap(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not _is_our_etcd(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not _is_our_etcd(pid):
            return
        time.sleep(0.02)


def etcd_command(
    name: str,
    data_dir: Path,
    client_urls: Sequence[str],
    peer_url: str,
    initial_cluster: Mapping[str, str] | None = None,
    token: str | None = None,
    tls: TlsFiles | None = None,
) -> list[str]:
    """The etcd command line; ``initial_cluster`` maps every member's name to its peer URL.
    With ``tls`` (the member's certificate and key, and the cluster's CA) clients and peers both
    need a certificate signed by that CA (mutual TLS); the URLs must then be https."""
    urls = ",".join(client_urls)
    cluster = ",".join(f"{n}={u}" for n, u in (initial_cluster or {name: peer_url}).items())
    return [
        ETCD_BINARY,
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", urls,
        "--advertise-client-urls", urls,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",  # ignored once the data dir holds the member
        "--initial-cluster-token", token or f"podnet-{name}",
        "--logger", "zap",
        "--log-outputs", "stderr",
        *(_tls_flags(tls) if tls is not None else []),
    ]  # fmt: skip


def _tls_flags(tls: TlsFiles) -> list[str]:
    return [
        "--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca, "--client-cert-auth",
        "--peer-cert-file", tls.cert, "--peer-key-file", tls.key, "--peer-trusted-ca-file", tls.ca,
        "--peer-client-cert-auth",
    ]  # fmt: skip


def start_etcd(
    name: str,
    data_dir: str | Path,
    client_urls: Sequence[str] | str,
    peer_url: str,
    netns: str | None,
    log_path: str | Path,
    timeout: float = DEFAULT_START_TIMEOUT,
    initial_cluster: Mapping[str, str] | None = None,
    token: str | None = None,
    wait: bool = True,
    tls: TlsFiles | None = None,
) -> EtcdProcess:
    """Run etcd (inside ``netns`` if given), wait until healthy (unless ``wait`` is False: a
    cluster member, see the module docstring), return its ``EtcdProcess``."""
    if shutil.which(ETCD_BINARY) is None:
        raise EtcdStartError("etcd binary not found in PATH: install the Debian package etcd-server")
    urls = (client_urls,) if isinstance(client_urls, str) else tuple(client_urls)
    data_dir, log_path = Path(data_dir), Path(log_path)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = etcd_command(name, data_dir, urls, peer_url, initial_cluster, token, tls)
    if netns is not None:
        if not netns_util.exists(netns):
            raise EtcdStartError(f"cannot start etcd {name}: network namespace {netns} does not exist")
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = dict(os.environ)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
    etcd = EtcdProcess(name, proc.pid, urls, data_dir, log_path, netns, tls)
    if wait:
        try:
            wait_healthy(etcd, timeout)
        except BaseException:
            etcd.stop(grace=1.0)
            raise
    return etcd


def wait_healthy(etcd: EtcdProcess, timeout: float = DEFAULT_START_TIMEOUT) -> None:
    """Until ``etcd`` answers /health true; ``EtcdStartError`` naming its log if it exits or not."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not _running(etcd.pid):  # not alive(): `ip netns exec` may not have exec'd etcd yet
            _reap(etcd.pid)
            raise EtcdStartError(f"etcd {etcd.name} exited during startup; see {etcd.log_path}")
        ok, last = health(etcd.endpoint, etcd.netns, tls=etcd.tls)
        if ok:
            return
        time.sleep(0.05)
    raise EtcdStartError(
        f"etcd {etcd.name} (pid {etcd.pid}) not healthy at {etcd.endpoint} after {timeout:g}s "
        f"({last}); see {etcd.log_path}"
    )


def health(
    endpoint: str, netns: str | None = None, timeout: float = 1.0, tls: TlsFiles | None = None
) -> tuple[bool, str]:
    """Ask ``endpoint``/health (from inside ``netns`` if given); (healthy, detail)."""
    url = endpoint.rstrip("/") + "/health"
    try:
        if netns is None:
            body = _fetch(url, timeout, tls)
        else:
            with netns_util.entered(netns):  # the socket is made, and stays, inside the netns
                body = _fetch(url, timeout, tls)
    except (OSError, urllib.error.URLError) as exc:
        return False, str(exc)
    try:
        return json.loads(body).get("health") == "true", body
    except ValueError:
        return False, body


def _fetch(url: str, timeout: float, tls: TlsFiles | None = None) -> str:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls.ssl_context()))
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as resp:
        return resp.read().decode()
