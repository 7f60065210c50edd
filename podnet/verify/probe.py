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
import threading
from dataclasses import dataclass

from podnet.util import netns


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


BULK = 64 * 1024  # bytes each way: dozens of full-size segments, so a filter on size is caught


def tcp_probe(
    src_ns: str, dst_ns: str, dst_ip: str, port: int = 7946, timeout: float = 2.0, bulk: int = BULK
) -> ProbeResult:
    """Open a TCP connection from ``src_ns`` to ``dst_ip:port`` served in ``dst_ns`` and move
    ``bulk`` bytes each way (full-size segments both ways: opening a connection alone passes a
    filter that drops only large packets). The server side runs in a thread of this process."""
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
        echoed = _Echo(server, bulk, timeout)
        echoed.start()
        with netns.entered(src_ns):
            client = socket.socket(family, socket.SOCK_STREAM)
        with contextlib.closing(client):
            client.settimeout(timeout)
            where = f"TCP {dst_ip}:{port} from {src_ns}"
            try:
                client.connect((dst_ip, port))
            except OSError as e:
                echoed.join(timeout + 1)
                return ProbeResult(False, f"{where}: {e.strerror or type(e).__name__}")
            got, error = 0, ""
            try:
                client.sendall(_pattern(bulk))
                while got < bulk:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
            except OSError as e:  # socket.timeout is an OSError: the bytes did not make it
                error = e.strerror or type(e).__name__
        echoed.join(timeout + 1)
        if got == bulk:
            return ProbeResult(True, f"TCP {dst_ip}:{port} ok ({bulk} B each way), seen from {echoed.peer}")
        way = (
            f"{echoed.received} of {bulk} B reached the server"
            if echoed.received < bulk
            else f"the server got all {bulk} B, {got} came back"
        )
        reason = error or "closed"
        return ProbeResult(False, f"{where}: connected, but {way} ({reason}): large segments lost?")


def _pattern(size: int) -> bytes:
    return (b"podnet-probe" * (size // 12 + 1))[:size]


class _Echo(threading.Thread):
    """Accepts one connection, reads ``bulk`` bytes and sends as many back."""

    def __init__(self, server: socket.socket, bulk: int, timeout: float) -> None:
        super().__init__(daemon=True)
        self.server, self.bulk, self.timeout = server, bulk, timeout
        self.received = 0
        self.peer = ""

    def run(self) -> None:
        try:
            conn, peer = self.server.accept()
        except OSError:
            return
        self.peer = str(peer[0])
        with contextlib.closing(conn):
            conn.settimeout(self.timeout)
            try:
                while self.received < self.bulk:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    self.received += len(chunk)
                conn.sendall(_pattern(self.bulk))
            except OSError:
                return


def udp_probe(
    src_ns: str, dst_ns: str, dst_ip: str, port: int, size: int, timeout: float = 1.5
) -> ProbeResult:
    """A UDP datagram of ``size`` bytes on the wire (DF set) from ``src_ns`` to ``dst_ip:port``,
    echoed back by a socket this process holds in ``dst_ns``: large UDP both ways."""
    family = socket.AF_INET6 if ipaddress.ip_address(dst_ip).version == 6 else socket.AF_INET
    payload = _pattern(max(size - (28 if family == socket.AF_INET else 48), 16))
    with netns.entered(dst_ns):
        server = socket.socket(family, socket.SOCK_DGRAM)
    with netns.entered(src_ns):
        client = socket.socket(family, socket.SOCK_DGRAM)
    with contextlib.closing(server), contextlib.closing(client):
        try:
            server.bind((dst_ip, port))
        except OSError as e:
            return ProbeResult(False, f"cannot listen on UDP {dst_ip}:{port} in {dst_ns}: {e.strerror}")
        for sock in (server, client):
            sock.settimeout(timeout)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, 10, 3)  # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: DF
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, 23, 3)
        where = f"UDP {dst_ip}:{port} from {src_ns} ({len(payload)} B payload, DF)"
        try:
            client.sendto(payload, (dst_ip, port))
            data, peer = server.recvfrom(65535)
        except OSError as e:
            return ProbeResult(False, f"{where}: did not arrive ({e.strerror or type(e).__name__})")
        try:
            server.sendto(data, peer[:2])
            back = client.recv(65535)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            return ProbeResult(False, f"{where}: arrived, the echo did not come back ({reason})")
        ok = back == payload
        return ProbeResult(ok, f"{where}: ok both ways" if ok else f"{where}: echo garbled")


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
