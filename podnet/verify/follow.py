"""Follow marked probes along a path in a lab, and see where they stop.

The path walk (``podnet.verify.diagnose``) reads tables; this watches packets. The source
namespace sends ICMP echo requests (what the pod guard lets a pod send anywhere, and what the
kernel answers without a listener): two small ones and two of the path's full size, all with DF
set and a random token at the start of their payload (the echo reply carries it back). Meanwhile,
in the namespaces the walk went through (and the bridges between them):

- tcpdump on every interface (``-i any``, Linux cooked v2: interface and direction of each
  packet) finds each copy of the token: where a probe came in, where it left, and whether it was
  inside a tunnel there;
- on nodes and routers, a short-lived table ``inet podnet_trace`` sets ``meta nftrace`` on packets
  carrying a token (plain or inside a tunnel protocol) and ``nft monitor trace`` names the rule or
  chain policy that dropped one;
- the kernel's own drop counters (``/proc/net/snmp``, ``netstat``, ``snmp6``: no route, too big
  with DF, discards) and every interface's dropped counters are read before and after.

Pods are traced too (their own firewall is on the path), and each host's qdiscs are read before
and after (``tc -s qdisc``: a qdisc that drops everything counts it nowhere else).

Everything added is removed before ``follow`` returns (the table deleted, tcpdump and nft stopped
by PID). Lab-only: on a real host the agent's health probes and path-MTU prober do this job.
Beside the echoes, a TCP connection ``src -> dst:<random port>`` moves 64 KiB each way (full-size
segments both ways: a filter on size lets a connection open) and a full-size UDP datagram (DF)
goes there and back, both to sockets this process holds in the destination's namespace and both
traced by that port: pod traffic is mostly TCP, and a filter that drops only TCP or only large
packets lets every echo through. The verdict from what was seen is pure (``locate``,
``trace_drops``), so every case is unit-tested.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podnet.datapath.kernel import dropstats
from podnet.specs import tunnel as tunnel_spec
from podnet.util import netns
from podnet.util.proc import stop
from podnet.verify.capture import pcap_frames, stop_tcpdump, wait_listening
from podnet.verify.probe import tcp_probe, udp_probe
from podnet.verify.view import PathView, Place

TRACE_TABLE = "podnet_trace"
SLL2 = 276  # LINKTYPE_LINUX_SLL2
PACKET_OUTGOING = 4
ICMP_ECHO = {4: (8, 0), 6: (128, 129)}  # family: (request type, reply type)
HEADERS = {4: 28, 6: 48}  # IP + ICMP header bytes in front of the payload
ENCAPSULATED_AFTER = 60  # a token further into the packet than this sits inside a tunnel
WAIT = 1.5  # seconds the probes' replies are waited for
SMALL = 16 + 28  # bytes of the small probe (IPv4)


@dataclass(frozen=True)
class Sighting:
    """One copy of a probe seen by tcpdump."""

    host: str
    iface: str
    outgoing: bool
    encapsulated: bool
    reply: bool  # an echo reply (the way back)
    big: bool  # the full-size probe, not the small one
    at: float = 0.0  # when (every namespace shares the clock: sorting by it gives the trail)


@dataclass(frozen=True)
class HostCounters:
    """What rose on one host while the probes were out."""

    nft_drops: tuple[str, ...] = ()  # "inet fw fwdc rule udp dport <port> drop (verdict drop)"
    port_drops: tuple[str, ...] = ()  # the same, for the TCP and UDP probes' packets
    kernel: tuple[tuple[str, int], ...] = ()  # ("Ip.FragFails", 2)
    links: tuple[tuple[str, int], ...] = ()  # ("to-r2", 2): an interface's dropped packets
    qdiscs: tuple[tuple[str, int], ...] = ()  # ("to-r2 root qdisc pfifo limit 0", 4): qdisc drops


@dataclass(frozen=True)
class ProbeRun:
    """What the probes of one pair did: sent, answered, and every place they were seen."""

    src: Place
    dst: Place
    size: int
    hosts: tuple[str, ...]  # where it looked, in path order
    sent: tuple[bool, bool]  # (small, big) probes left the socket
    answered: tuple[bool, bool]  # their echo replies came back
    send_error: str = ""
    sightings: tuple[Sighting, ...] = ()
    counters: dict[str, HostCounters] = field(default_factory=dict)
    tcp: tuple[bool, str] | None = None  # the TCP probe's (bulk went both ways, detail); None: not tried
    tcp_port: int = 0  # the TCP and UDP probes' port
    udp: tuple[bool, str] | None = None  # the full-size UDP probe's (echoed, detail); None: not tried

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "looked": list(self.hosts),
            "sent": {"small": self.sent[0], "fullSize": self.sent[1]},
            "answered": {"small": self.answered[0], "fullSize": self.answered[1]},
            "sendError": self.send_error,
            "tcp": None
            if self.tcp is None
            else {"port": self.tcp_port, "ok": self.tcp[0], "detail": self.tcp[1]},
            "udp": None
            if self.udp is None
            else {"port": self.tcp_port, "ok": self.udp[0], "detail": self.udp[1]},
            "seen": [
                {
                    "host": s.host,
                    "iface": s.iface,
                    "direction": "out" if s.outgoing else "in",
                    "probe": ("reply" if s.reply else "request") + (" full-size" if s.big else " small"),
                    "encapsulated": s.encapsulated,
                }
                for s in self.sightings
            ],
            "counters": {
                h: {
                    "nft": list(c.nft_drops + c.port_drops),
                    "kernel": dict(c.kernel),
                    "links": dict(c.links),
                    "qdiscs": dict(c.qdiscs),
                }
                for h, c in self.counters.items()
                if c.nft_drops or c.port_drops or c.kernel or c.links or c.qdiscs
            },
        }


# ---- where the probes stopped (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """Where one probe's trail ends: ``host`` took it in and did not pass it on (``between`` is
    empty), or it left ``host`` and never reached ``between``."""

    host: str
    between: str = ""
    reply: bool = False
    big: bool = False
    inside_tunnel: bool = False
    iface_in: str = ""


def locate(run: ProbeRun, path: Sequence[str], reply_path: Sequence[str]) -> Loss | None:
    """The first place a probe of ``run`` was lost along the host sequence it should take (the
    request along ``path``, the reply along ``reply_path``), or None when every probe was answered.
    The small probe is looked at first: when it is lost, the size is not the cause."""
    for big in (False, True):
        if run.answered[big]:
            continue
        for reply, hosts in ((False, path), (True, reply_path)):
            loss = _trail_end(run, hosts, reply, big)
            if loss is not None:
                return loss
        # seen everywhere, yet no reply reached the socket: it was lost where it arrived
        return Loss(reply_path[-1], reply=True, big=big)
    return None


def _trail_end(run: ProbeRun, hosts: Sequence[str], reply: bool, big: bool) -> Loss | None:
    seen = [s for s in run.sightings if s.reply == reply and s.big == big]
    previous = ""
    for i, host in enumerate(hosts):
        here = [s for s in seen if s.host == host]
        came = [s for s in here if not s.outgoing]
        left = [s for s in here if s.outgoing]
        first, last = i == 0, i == len(hosts) - 1
        if not first and not came:
            prior = [s for s in seen if s.host == previous and s.outgoing]
            return Loss(previous, host, reply, big, any(s.encapsulated for s in prior))
        if not last and not left:
            inside = any(s.encapsulated for s in came)
            return Loss(host, "", reply, big, inside, came[0].iface if came else "")
        previous = host
    return None


# ---- running the probes --------------------------------------------------------------------------


def follow(
    view: PathView, src: Place, dst: Place, size: int, hosts: Sequence[str], tcp: bool = True
) -> ProbeRun:
    """Send the probes ``src -> dst`` while watching ``hosts`` (path order; bridges included);
    ``tcp``: the TCP probe too (not where podnet's own guard refuses it, e.g. pod to node)."""
    tokens = (os.urandom(8), os.urandom(8))
    port = 40000 + int.from_bytes(os.urandom(2), "big") % 20000
    with tempfile.TemporaryDirectory(prefix="podnet-follow-") as tmp, contextlib.ExitStack() as stack:
        names = {h: view.ns(h) for h in hosts}
        before = {h: _counters(ns) for h, ns in names.items()}
        dumps = stack.enter_context(_tcpdumps(names, Path(tmp)))
        traced = {h: names[h] for h in hosts if view.role(h) in ("node", "router", "pod", "external")}
        monitors = stack.enter_context(_nft_traces(traced, tokens, port, Path(tmp)))
        sent, answered, error = _send(view.ns(src.host), dst.ip, size, tokens)
        tcp_result = udp_result = None
        if tcp and dst.host in view.hosts():
            res = tcp_probe(view.ns(src.host), view.ns(dst.host), str(dst.ip), port=port, timeout=1.5)
            tcp_result = (res.ok, res.detail)
            res = udp_probe(view.ns(src.host), view.ns(dst.host), str(dst.ip), port, size, timeout=1.0)
            udp_result = (res.ok, res.detail)
        time.sleep(0.2)  # the last copies reach tcpdump's buffers
        stack.close()
        after = {h: _counters(ns) for h, ns in names.items()}
        every = sorted(
            (
                s
                for h, path in dumps.items()
                for s in _sightings(h, path.read_bytes() if path.exists() else b"", tokens, view)
            ),
            key=lambda s: s.at,
        )
        first: dict[tuple[Any, ...], Sighting] = {}
        for s in every:
            first.setdefault((s.host, s.iface, s.outgoing, s.encapsulated, s.reply, s.big), s)
        sightings = tuple(first.values())
        traces = {
            h: trace_drops(p.read_text(), port) if p.exists() else ((), ()) for h, p in monitors.items()
        }
        counters = {
            h: HostCounters(
                nft_drops=traces.get(h, ((), ()))[0],
                port_drops=traces.get(h, ((), ()))[1],
                kernel=_rises(before[h][0], after[h][0]),
                links=_rises(before[h][1], after[h][1]),
                qdiscs=_rises(before[h][2], after[h][2]),
            )
            for h in hosts
        }
    return ProbeRun(
        src, dst, size, tuple(hosts), sent, answered, error, sightings, counters, tcp_result, port, udp_result
    )


def _send(
    ns: str, dst: Any, size: int, tokens: tuple[bytes, bytes]
) -> tuple[tuple[bool, bool], tuple[bool, bool], str]:
    """Two echo requests per token (small, then full size), DF set; which got a reply."""
    family = dst.version
    request, reply_type = ICMP_ECHO[family]
    with netns.entered(ns):
        sock = socket.socket(
            socket.AF_INET if family == 4 else socket.AF_INET6,
            socket.SOCK_RAW,
            socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6,
        )
    sent, answered, error = [False, False], [False, False], ""
    with contextlib.closing(sock):
        if family == 4:
            sock.setsockopt(
                socket.IPPROTO_IP, 10, 3
            )  # IP_MTU_DISCOVER = IP_PMTUDISC_PROBE: DF, no fragmenting
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, 23, 3)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_PROBE
        ident = os.getpid() & 0xFFFF
        for big, token in enumerate(tokens):
            length = max(size - HEADERS[family], 16) if big else SMALL - 28
            payload = (token * (length // 8 + 1))[:length]
            for seq in (1, 2):
                try:
                    sock.sendto(_echo(request, ident, seq + 2 * big, payload, family), (str(dst), 0))
                    sent[big] = True
                except OSError as e:
                    which = "full-size" if big else "small"
                    error = f"sending the {which} probe ({length + HEADERS[family]} B): {e.strerror}"
        until = time.monotonic() + WAIT
        while not all(answered[i] or not sent[i] for i in (0, 1)) and time.monotonic() < until:
            ready, _, _ = select.select([sock], [], [], max(0.0, until - time.monotonic()))
            if not ready:
                break
            data, _ = sock.recvfrom(65535)
            icmp = data[(data[0] & 0x0F) * 4 :] if family == 4 else data
            if len(icmp) >= 16 and icmp[0] == reply_type:
                for big, token in enumerate(tokens):
                    answered[big] |= icmp[8:16] == token
    return (sent[0], sent[1]), (answered[0], answered[1]), error


def _echo(kind: int, ident: int, seq: int, payload: bytes, family: int) -> bytes:
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if family == 6:
        return header + payload  # the kernel fills in the ICMPv6 checksum
    data = header + payload
    total = sum(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return struct.pack("!BBHHH", kind, 0, ~total & 0xFFFF, ident, seq) + payload


@contextlib.contextmanager
def _tcpdumps(names: dict[str, str], tmp: Path) -> Iterator[dict[str, Path]]:
    """tcpdump on every interface of each host's namespace, all started before any is waited
    for; stopped by PID when the block ends."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for host, ns in names.items():
            # immediate mode: without it libpcap hands packets over in blocks, and the last block
            # is lost when tcpdump is stopped; -Z root: it writes into our private directory
            pcap = str(tmp / f"{host}.pcap")
            argv = ["ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-Z", "root", "-i", "any",
                    "-y", "LINUX_SLL2", "-n", "-U", "-s", "192", "-c", "2000", "-w", pcap,
                    "icmp or icmp6 or udp"]  # fmt: skip
            procs[host] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for proc in procs.values():
            wait_listening(proc, timeout=5.0)
        yield {host: tmp / f"{host}.pcap" for host in names}
    finally:
        for proc in procs.values():
            stop_tcpdump(proc)


@contextlib.contextmanager
def _nft_traces(
    names: dict[str, str], tokens: tuple[bytes, bytes], port: int, tmp: Path
) -> Iterator[dict[str, Path]]:
    """``nft monitor trace`` in each host's namespace while a table marks packets carrying a
    token for tracing: plain (the token 8 bytes into ICMP), inside every described tunnel
    protocol (its spec's ``inner_offset`` bytes into the outer UDP to the inner IP header, then
    20 or 40 bytes of inner IPv4 or IPv6 and 8 of ICMP: 58 and 78 bytes for an 8-byte tunnel
    header), and the TCP probe's packets by its port (plain, and inside a tunnel at the same
    depths)."""
    depths = tunnel_spec.inner_offsets()
    token_bits = [8 * 8] + [8 * (d + ip + 8) for d in depths for ip in (20, 40)]
    port_bits = [8 * (d + ip + end) for d in depths for ip in (20, 40) for end in (0, 2)]
    rules = [f"@th,{offset},64 0x{t.hex()} meta nftrace set 1" for t in tokens for offset in token_bits]
    ends = ("dport", "sport")
    rules += [f"{proto} {end} {port} meta nftrace set 1" for proto in ("tcp", "udp") for end in ends]
    rules += [f"@th,{offset},16 {port} meta nftrace set 1" for offset in port_bits]
    body = "\n".join(f"    {r}" for r in rules)
    script = (
        f"table inet {TRACE_TABLE} {{\n"
        f"  chain pre {{\n    type filter hook prerouting priority -500;\n{body}\n  }}\n"
        f"  chain out {{\n    type filter hook output priority -500;\n{body}\n  }}\n}}\n"
    )
    monitors: list[subprocess.Popen[bytes]] = []
    try:
        for host, ns in names.items():
            with open(tmp / f"{host}.trace", "w") as sink:
                monitors.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", ns, "nft", "monitor", "trace"],
                        stdout=sink,
                        stderr=subprocess.DEVNULL,
                    )
                )
        time.sleep(0.1)  # the monitors subscribe
        for ns in names.values():
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                           capture_output=True, timeout=10, check=False)  # fmt: skip
        yield {host: tmp / f"{host}.trace" for host in names}
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", TRACE_TABLE],
                           capture_output=True, timeout=10, check=False)  # fmt: skip
        for monitor in monitors:
            stop(monitor)


TRACE_DROP = re.compile(r"^trace id \S+ (\S+ \S+ \S+) (rule .* \(verdict drop\)|policy drop)")


TRACE_LINE = re.compile(r"^trace id (\S+) ")


def trace_drops(text: str, port: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The traced drops (``inet fw fwdc rule udp dport <port> drop (verdict drop)``), once each:
    (those of the echoes, those of the TCP and UDP probes: a trace whose packet names ``port``)
    (pure)."""
    lines: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = TRACE_LINE.match(line.strip())
        if m:
            lines.setdefault(m.group(1), []).append(line.strip())
    echo: dict[str, None] = {}
    tcp: dict[str, None] = {}
    for trace in lines.values():
        is_tcp = any(f"dport {port} " in f"{line} " or f"sport {port} " in f"{line} " for line in trace)
        for line in trace:
            m = TRACE_DROP.match(line)
            if m:
                (tcp if is_tcp else echo)[f"{m.group(1)} {m.group(2)}"] = None
    return tuple(echo), tuple(tcp)


def _sightings(host: str, data: bytes, tokens: tuple[bytes, bytes], view: PathView) -> Iterator[Sighting]:
    if not data:
        return
    linktype, frames = pcap_frames(data)
    if linktype != SLL2:
        return
    names = {link.index: link.name for link in view.links(host).values()}
    for at, frame in frames:
        if len(frame) < 20:
            continue
        ifindex, pkttype = struct.unpack_from("!I", frame, 4)[0], frame[10]
        packet = frame[20:]
        for big, token in enumerate(tokens):
            at = packet.find(token)
            if at < 8:
                continue
            icmp_type = packet[at - 8]
            yield Sighting(
                host=host,
                iface=names.get(ifindex, f"if{ifindex}"),
                outgoing=pkttype == PACKET_OUTGOING,
                encapsulated=at > ENCAPSULATED_AFTER,
                reply=icmp_type in (0, 129),
                big=bool(big),
                at=at,
            )


def _counters(ns: str) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """The namespace's kernel drop counters, every interface's dropped packets (rx + tx) and
    every qdisc's drops."""
    script = (
        "cat /proc/net/snmp /proc/net/netstat; echo ==; cat /proc/net/snmp6; echo ==; cat /proc/net/dev; "
        "echo ==; tc -s -j qdisc show"
    )
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    pairs, snmp6, dev, qdiscs = ([*res.stdout.split("==\n"), "", "", ""])[:4]
    return (
        dropstats.parse_kernel_counters(pairs, snmp6),
        dropstats.parse_link_drops(dev),
        qdisc_drops(qdiscs),
    )


def qdisc_drops(text: str) -> dict[str, int]:
    """``{"to-r2 root qdisc pfifo limit 0": drops}`` from ``tc -s -j qdisc show`` (pure)."""
    try:
        qdiscs = json.loads(text or "[]")
    except ValueError:
        return {}
    found: dict[str, int] = {}
    for q in qdiscs if isinstance(qdiscs, list) else []:
        where = "root" if q.get("root") else f"parent {q.get('parent', '?')}"
        options = q.get("options") or {}
        limit = f" limit {options['limit']}" if isinstance(options, dict) and "limit" in options else ""
        found[f"{q.get('dev')} {where} qdisc {q.get('kind')}{limit}"] = int(q.get("drops") or 0)
    return found


def _rises(before: dict[str, int], after: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple((k, after[k] - before.get(k, 0)) for k in sorted(after) if after[k] > before.get(k, 0))


def path_hosts(view: PathView, walked: Sequence[str], src: Place, dst: Place) -> list[str]:
    """The hosts a probe should pass in order (the walk's, then the destination), and with them
    the bridges of the segments between consecutive hosts (to look at, not to order by)."""
    hosts: list[str] = []
    for h in [src.host, *walked, dst.host]:
        if h in view.hosts() and h not in hosts:
            hosts.append(h)
    return hosts


def bridges(view: PathView, hosts: Sequence[str]) -> list[str]:
    """The segment hosts (bridges) whose ports the path's hosts are plugged into."""
    found: list[str] = []
    for host in hosts:
        for dev in view.links(host):
            port = view.underlay_port(host, dev)
            if port is not None and port.segment is not None:
                seg = view.segment_host(port.segment)
                if seg in view.hosts() and seg not in found and seg not in hosts:
                    found.append(seg)
    return found
