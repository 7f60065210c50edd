"""Reachability probes between namespaces, without helper programs.

A socket belongs to the namespace it was created in, so the prober makes a listening socket
inside the destination namespace and a connecting socket inside the source namespace, both
from this process, and moves real bytes between them over the lab's datapath.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
from dataclasses import dataclass

from podnet.util import netns


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


def tcp_probe(src_ns: str, dst_ns: str, dst_ip: str, port: int = 7946, timeout: float = 2.0) -> ProbeResult:
    """Open a TCP connection from ``src_ns`` to ``dst_ip:port`` served in ``dst_ns``; send and echo."""
    family = socket.AF_INET6 if ipaddress.ip_address(dst_ip).version == 6 else socket.AF_INET
    with netns.entered(dst_ns):
        server = socket.socket(family, socket.SOCK_STREAM)
    with contextlib.closing(server):
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((dst_ip, port))
        except OSError as e:
            return ProbeResult(False, f"cannot listen on {dst_ip}:{port} in {dst_ns}: {e.strerror}")
        server.listen(1)
        server.settimeout(timeout)
        with netns.entered(src_ns):
            client = socket.socket(family, socket.SOCK_STREAM)
        with contextlib.closing(client):
            client.settimeout(timeout)
            try:
                client.connect((dst_ip, port))
                conn, peer = server.accept()
            except OSError as e:
                reason = e.strerror or type(e).__name__
                return ProbeResult(False, f"TCP {dst_ip}:{port} from {src_ns}: {reason}")
            with contextlib.closing(conn):
                conn.settimeout(timeout)
                try:
                    client.sendall(b"podnet-probe")
                    data = conn.recv(64)
                    conn.sendall(data)
                    echoed = client.recv(64)
                except OSError as e:  # socket.timeout is an OSError: the bytes did not make it
                    reason = e.strerror or type(e).__name__
                    return ProbeResult(False, f"TCP {dst_ip}:{port} from {src_ns}: connected, but {reason}")
            ok = echoed == b"podnet-probe"
            return ProbeResult(ok, f"TCP {dst_ip}:{port} ok, seen from {peer[0]}" if ok else "no echo")


def ping(
    src_ns: str,
    dst_ip: str,
    count: int = 1,
    timeout: float = 1.0,
    ttl: int | None = None,
    size: int | None = None,
    dont_fragment: bool = False,
) -> ProbeResult:
    """ICMP echo from ``src_ns`` (iputils ping), bounded by count and timeout."""
    argv = ["ip", "netns", "exec", src_ns, "ping", "-n", "-q", "-c", str(count), "-W", str(timeout)]
    if ttl is not None:
        argv += ["-t", str(ttl)]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    argv.append(dst_ip)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=count * (timeout + 1) + 5)
    out = (res.stdout + res.stderr).strip().splitlines()
    return ProbeResult(res.returncode == 0, out[-1] if out else f"exit {res.returncode}")
