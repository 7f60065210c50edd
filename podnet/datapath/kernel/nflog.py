"""Reading packets that nftables sends to an NFLOG group (``log group N prefix "..."``), over
netfilter's netlink socket (``NETLINK_NETFILTER``, subsystem ``NFNL_SUBSYS_ULOG``), in the
namespace of the calling thread. pyroute2 has no NFLOG client, so this is the small part of the
protocol podnet needs: bind one group, ask for the first ``COPY_RANGE`` bytes of each packet,
and decode each message's prefix, interfaces, timestamp and network header.

    with NflogSocket(17) as sock:
        for packet in sock.read(timeout=1.0): ...

Only one socket per namespace can bind a group: a second bind fails (EPERM; ``NflogError``
says so).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF
COPY_RANGE = 128  # bytes of each packet: the IP and transport headers
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


class NflogError(OSError):
    """The group cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class LoggedPacket:
    """One packet nftables logged: where it was, its addresses and ports, and the rule's prefix."""

    prefix: str
    indev: int
    outdev: int
    family: int  # 4 or 6
    src: str
    dst: str
    proto: str
    sport: int | None
    dport: int | None
    at: float  # the kernel's timestamp (seconds), 0 when it sent none


def _nlmsg(msg_type: int, flags: int, seq: int, family: int, res_id: int, attrs: bytes) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + attrs
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    found = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return found


def parse_messages(data: bytes) -> Iterator[LoggedPacket]:
    """The NFLOG packet messages in one netlink datagram (pure)."""
    pos = 0
    while pos + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, pos)
        if length < 16:
            break
        if msg_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET and length >= 20:
            family = data[pos + 16]
            packet = _packet(family, _attrs(data[pos + 20 : pos + length]))
            if packet is not None:
                yield packet
        pos += (length + 3) & ~3


def _packet(family: int, attrs: dict[int, bytes]) -> LoggedPacket | None:
    payload = attrs.get(NFULA_PAYLOAD, b"")
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0")[0].decode(errors="replace")
    indev = struct.unpack("!I", attrs[NFULA_IFINDEX_INDEV])[0] if NFULA_IFINDEX_INDEV in attrs else 0
    outdev = struct.unpack("!I", attrs[NFULA_IFINDEX_OUTDEV])[0] if NFULA_IFINDEX_OUTDEV in attrs else 0
    at = 0.0
    if len(attrs.get(NFULA_TIMESTAMP, b"")) == 16:
        sec, usec = struct.unpack("!QQ", attrs[NFULA_TIMESTAMP])
        at = sec + usec / 1e6
    if family == socket.AF_INET and len(payload) >= 20:
        header, proto = (payload[0] & 0x0F) * 4, payload[9]
        src, dst = str(ipaddress.IPv4Address(payload[12:16])), str(ipaddress.IPv4Address(payload[16:20]))
        version = 4
    elif family == socket.AF_INET6 and len(payload) >= 40:
        header, proto = 40, payload[6]
        src, dst = str(ipaddress.IPv6Address(payload[8:24])), str(ipaddress.IPv6Address(payload[24:40]))
        version = 6
    else:
        return None
    sport = dport = None
    if proto in (6, 17) and len(payload) >= header + 4:
        sport, dport = struct.unpack_from("!HH", payload, header)
    return LoggedPacket(
        prefix, indev, outdev, version, src, dst, PROTOCOLS.get(proto, str(proto)), sport, dport, at
    )


class NflogSocket:
    """A bound NFLOG group in the calling thread's namespace."""

    def __init__(self, group: int) -> None:
        self.group = group
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self._sock.bind((0, 0))
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._request(_attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND) + b"\0\0\0"), 1)
            mode = struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0) + b"\0\0"
            self._request(_attr(NFULA_CFG_MODE, mode), 2)
        except OSError as exc:
            self._sock.close()
            if exc.errno in (errno.EBUSY, errno.EPERM):
                raise NflogError(
                    exc.errno,
                    f"NFLOG group {group} is read by another process in this namespace (only one may "
                    "bind it): stop it, or turn drop events off (bpf.events.drop.enabled=false)",
                ) from None
            raise NflogError(exc.errno or 0, f"binding NFLOG group {group}: {exc.strerror or exc}") from None

    def _request(self, attrs: bytes, seq: int) -> None:
        msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        self._sock.send(_nlmsg(msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, socket.AF_UNSPEC, self.group, attrs))
        while True:
            data = self._sock.recv(65536)
            _, kind, _, got_seq, _ = struct.unpack_from("=IHHII", data, 0)
            if kind == NLMSG_ERROR and got_seq == seq:
                code = -struct.unpack_from("=i", data, 16)[0]
                if code:
                    raise OSError(code, errno.errorcode.get(code, str(code)))
                return

    def read(self, timeout: float) -> list[LoggedPacket]:
        """The packets logged within ``timeout`` seconds (as soon as there are any)."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return []
        try:
            data = self._sock.recv(1 << 20)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped log messages: read on
                return []
            raise
        return list(parse_messages(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._request(_attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_UNBIND) + b"\0\0\0"), 3)
        self._sock.close()

    def __enter__(self) -> NflogSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
