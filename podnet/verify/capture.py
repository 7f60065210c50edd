"""``podnet capture``: tcpdump on an underlay link during a probe, and what it saw, in one sentence.

tcpdump writes a pcap inside the lab host's namespace (started and stopped by PID, bounded in
time) while a pod pings another pod; the pcap is decoded here (Ethernet, IPv4 or IPv6, UDP, the tunnel
header as each tunnel protocol reads it, and the inner frame), so the verdict does not depend on
tcpdump's text format:
``<protocol> UDP/<port> carrying 10.244.1.10 -> 10.244.2.10`` (as the protocol's spec writes it) or
``plain 10.244.1.10 -> 10.244.2.10, no encapsulation``.
"""

from __future__ import annotations

import ipaddress
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.datapath.tunnels import TunnelProtocol, all_protocols, tunnel_protocol
from podnet.util.proc import stop
from podnet.verify.probe import ping
from podnet.verify.view import PathView, Place, ViewError

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100


@dataclass(frozen=True)
class Packet:
    """One decoded frame: the outer IP header (either family), and the inner one when it is
    tunnelled (``tunnel`` then names the protocol)."""

    src: str
    dst: str
    proto: int
    dport: int | None = None
    inner_src: str | None = None
    inner_dst: str | None = None
    tunnel: str | None = None


def _decapsulate(dport: int, payload: bytes) -> tuple[TunnelProtocol, Packet] | None:
    """The protocol that recognises ``payload`` on UDP port ``dport``, with the inner packet."""
    for protocol in all_protocols():
        inner_frame = protocol.inner_frame(payload) if dport in protocol.wire_ports else None
        inner = _ip(inner_frame, 0) if inner_frame is not None else None
        if inner is not None:
            return protocol, inner
    return None


def _ip(frame: bytes, offset: int) -> Packet | None:
    """The IPv4 or IPv6 packet at ``offset`` of an Ethernet frame (a tunnel decoded one level)."""
    if len(frame) < offset + 14:
        return None
    ethertype = struct.unpack_from("!H", frame, offset + 12)[0]
    pos = offset + 14
    if ethertype == ETH_P_8021Q and len(frame) >= pos + 4:
        ethertype, pos = struct.unpack_from("!H", frame, pos + 2)[0], pos + 4
    if ethertype == ETH_P_IP and len(frame) >= pos + 20:
        header, proto = (frame[pos] & 0x0F) * 4, frame[pos + 9]
        src = str(ipaddress.IPv4Address(frame[pos + 12 : pos + 16]))
        dst = str(ipaddress.IPv4Address(frame[pos + 16 : pos + 20]))
    elif ethertype == ETH_P_IPV6 and len(frame) >= pos + 40:
        header, proto = 40, frame[pos + 6]  # extension headers are not followed: UDP and ICMPv6 come first
        src = str(ipaddress.IPv6Address(frame[pos + 8 : pos + 24]))
        dst = str(ipaddress.IPv6Address(frame[pos + 24 : pos + 40]))
    else:
        return None
    dport = None
    if proto == 17 and len(frame) >= pos + header + 8:
        dport = struct.unpack_from("!H", frame, pos + header + 2)[0]
        found = _decapsulate(dport, frame[pos + header + 8 :])
        if found is not None:
            protocol, inner = found
            return Packet(src, dst, proto, dport, inner.src, inner.dst, protocol.name)
    return Packet(src, dst, proto, dport)


def pcap_frames(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    """The link type and the (timestamp, frame) records of a classic pcap file (what
    ``tcpdump -w`` writes; microsecond timestamps)."""
    if len(data) < 24:
        return 1, []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file (bad magic)")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    frames = []
    pos = 24
    while pos + 16 <= len(data):
        sec, usec, incl = struct.unpack_from(endian + "III", data, pos)
        frames.append((sec + usec / 1e6, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return linktype, frames


def parse_pcap(data: bytes) -> list[Packet]:
    """Decode a classic pcap file with Ethernet frames (what ``tcpdump -w`` writes on veths)."""
    linktype, frames = pcap_frames(data)
    if linktype != 1:
        raise ValueError(f"pcap link type {linktype} is not Ethernet")
    return [pkt for _, frame in frames if (pkt := _ip(frame, 0)) is not None]


def verdict(packets: list[Packet], src: str, dst: str) -> tuple[str, str]:
    """(kind, sentence) for the probe ``src -> dst``: kind is the tunnel protocol's name
    (its tunnelProtocol value), plain or none."""
    for p in packets:
        if p.tunnel is not None and p.inner_src == src and p.inner_dst == dst:
            display = tunnel_protocol(p.tunnel).display
            return p.tunnel, f"{display} UDP/{p.dport} carrying {src} -> {dst} (outer {p.src} -> {p.dst})"
    for p in packets:
        if p.tunnel is None and p.src == src and p.dst == dst:
            return "plain", f"plain {src} -> {dst}, no encapsulation"
    return "none", f"no packet {src} -> {dst} seen"


@dataclass(frozen=True)
class CaptureResult:
    host: str
    iface: str
    src: Place
    dst: Place
    kind: str
    sentence: str
    packets: int
    probe_ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "on": f"{self.host}:{self.iface}",
            "from": self.src.describe(),
            "to": self.dst.describe(),
            "kind": self.kind,
            "saw": self.sentence,
            "packets": self.packets,
            "probeReplied": self.probe_ok,
        }


def default_pair(view: PathView, family: int | None = None) -> tuple[Place, Place]:
    """The first pod of the first node and the first pod of the second node with pods, by their
    addresses of ``family`` (default: their first)."""
    nodes = [n for n in view.nodes if view.pods_on(n)]
    if len(nodes) < 2:
        raise ViewError(f"lab {view.name} needs pods on two nodes for a capture probe; name --from/--to")
    return view.resolve(view.pods_on(nodes[0])[0], family), view.resolve(view.pods_on(nodes[1])[0], family)


def capture(view: PathView, host: str, iface: str, seconds: float, src: Place, dst: Place) -> CaptureResult:
    """tcpdump on ``host:iface`` while ``src`` pings ``dst`` for about ``seconds``."""
    if iface not in view.links(host):
        raise ViewError(f"{host} has no interface {iface} (it has: {', '.join(sorted(view.links(host)))})")
    with tempfile.TemporaryDirectory(prefix="podnet-capture-") as tmp:
        pcap = Path(tmp) / "capture.pcap"
        argv = [
            "ip",
            "netns",
            "exec",
            view.ns(host),
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "-s",
            "256",
            "-c",
            "500",
            "-w",
            str(pcap),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_listening(proc, timeout=5.0)
            count = max(2, int(seconds / 0.2))
            res = ping(view.ns(src.host), str(dst.ip), count=count, timeout=1.0)
        finally:
            stop_tcpdump(proc)
        data = pcap.read_bytes() if pcap.exists() else b""
    packets = parse_pcap(data) if data else []
    kind, sentence = verdict(packets, str(src.ip), str(dst.ip))
    return CaptureResult(host, iface, src, dst, kind, sentence, len(packets), res.ok)


def wait_listening(proc: subprocess.Popen[str], timeout: float) -> None:
    """Wait for tcpdump's "listening on" line (read by a thread so the wait stays bounded)."""
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout) or proc.poll() is not None:
        raise ViewError(f"tcpdump did not start (exit {proc.poll()})")
    time.sleep(0.05)


def stop_tcpdump(proc: subprocess.Popen[Any]) -> None:
    stop(proc, signal.SIGINT)
