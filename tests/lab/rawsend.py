"""Hand-made packets from inside a lab namespace, for the guard tests (stdlib only).

    rawsend.py udp SRC DST DPORT COUNT            IPv4/UDP with a forged source (IP_HDRINCL)
    rawsend.py vxlan DST INNER_SRC INNER_DST COUNT VXLAN to DST:8472 carrying an ICMP echo
    rawsend.py geneve DST INNER_SRC INNER_DST COUNT Geneve (VNI 1) to DST:6081, the same inside
    rawsend.py listen ADDR PORT SECONDS           count UDP datagrams received, print the count
    rawsend.py flood SRC DST SECONDS COUNT        spoofed IPv4/UDP as fast as it can, until either
                                                  bound (at most 300 s, 50 million packets)

Every address is one of the lab's own; the counts are bounded.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp_packet(src: str, dst: str, dport: int, body: bytes) -> bytes:
    return ipv4(src, dst, 17, struct.pack("!HHHH", 40000, dport, 8 + len(body), 0) + body)


def send_raw(packet: bytes, dst: str, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        for _ in range(count):
            s.sendto(packet, (dst, 0))
            time.sleep(0.01)


TUNNELS = {  # kind: (header, UDP port); both with VNI 1 and an Ethernet frame inside
    "vxlan": (b"\x08\x00\x00\x00\x00\x00\x01\x00", 8472),
    "geneve": (b"\x00\x00\x65\x58\x00\x00\x01\x00", 6081),
}


def main(argv: list[str]) -> int:
    kind = argv[1]
    if kind == "udp":
        src, dst, port, count = argv[2], argv[3], int(argv[4]), min(int(argv[5]), 1000)
        send_raw(udp_packet(src, dst, port, b"spoofed"), dst, count)
    elif kind in TUNNELS:
        dst, inner_src, inner_dst, count = argv[2], argv[3], argv[4], min(int(argv[5]), 1000)
        header, port = TUNNELS[kind]
        icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"injected"
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        inner = (
            b"\x02\x00\x00\x00\x00\x02"
            + b"\x02\x00\x00\x00\x00\x01"
            + b"\x08\x00"
            + ipv4(inner_src, inner_dst, 1, icmp)
        )
        body = header + inner
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(count):
                s.sendto(body, (dst, port))
                time.sleep(0.01)
    elif kind == "flood":
        src, dst = argv[2], argv[3]
        until = time.monotonic() + min(float(argv[4]), 300.0)
        left = min(int(argv[5]), 50_000_000)
        packet = udp_packet(src, dst, 9999, b"spoofed!")
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            while left > 0 and time.monotonic() < until:
                for _ in range(min(1000, left)):
                    s.sendto(packet, (dst, 0))
                left -= 1000
    elif kind == "listen":
        addr, port, seconds = argv[2], int(argv[3]), min(float(argv[4]), 30.0)
        got = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, port))
            s.settimeout(0.2)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    s.recvfrom(2048)
                    got += 1
                except TimeoutError:
                    continue
        print(got, flush=True)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
