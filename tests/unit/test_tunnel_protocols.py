"""Tunnel protocols as modules: wire decoding (capture), kernel support answers, per-peer entries."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from podnet.datapath.objects import FdbEntry
from podnet.datapath.tunnels import all_protocols, tunnel_of, tunnel_protocol, unsupported_reason
from podnet.verify.capture import parse_pcap, verdict

INNER_SRC, INNER_DST = "10.244.1.2", "10.244.2.2"


def _ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + payload


def _ether(payload: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + payload


def _inner() -> bytes:
    return _ether(_ipv4(INNER_SRC, INNER_DST, 1, b"\x08\x00" + b"\x00" * 62))


def _outer(dport: int, tunnel_header: bytes) -> bytes:
    body = tunnel_header + _inner()
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(body), 0) + body
    return _ether(_ipv4("172.16.1.2", "172.16.2.3", 17, udp))


def _pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    return out


GENEVE_NO_OPTIONS = b"\x00\x00\x65\x58\x00\x00\x01\x00"
GENEVE_ONE_OPTION = b"\x01\x00\x65\x58\x00\x00\x01\x00" + b"\x01\x02\x03\x00"  # opt_len 1 (4 bytes)
VXLAN = b"\x08\x00\x00\x00\x00\x00\x01\x00"


@pytest.mark.parametrize(
    ("dport", "header", "kind", "sentence"),
    [
        (8472, VXLAN, "vxlan", "VXLAN UDP/8472 carrying 10.244.1.2 -> 10.244.2.2"),
        (4789, VXLAN, "vxlan", "VXLAN UDP/4789 carrying"),
        (6081, GENEVE_NO_OPTIONS, "geneve", "Geneve UDP/6081 carrying 10.244.1.2 -> 10.244.2.2"),
        (6081, GENEVE_ONE_OPTION, "geneve", "Geneve UDP/6081 carrying"),
    ],
)
def test_capture_recognises_each_protocol(dport: int, header: bytes, kind: str, sentence: str) -> None:
    packets = parse_pcap(_pcap([_outer(dport, header)]))
    found_kind, text = verdict(packets, INNER_SRC, INNER_DST)
    assert found_kind == kind and sentence in text


def _ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                         ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)  # fmt: skip
    return header + payload


def _ether6(payload: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x86\xdd" + payload


def test_capture_reads_ipv6_inside_ipv6_vxlan_and_plain_ipv6() -> None:
    """Dual stack: an IPv6 pod packet inside VXLAN over an IPv6 underlay, and one not tunnelled."""
    inner = _ether6(_ipv6("fd00:10:244::2", "fd00:10:244:1::2", 58, b"\x80\x00" + b"\x00" * 62))
    udp = struct.pack("!HHHH", 40000, 8472, 8 + len(VXLAN) + len(inner), 0) + VXLAN + inner
    tunnelled = _ether6(_ipv6("fd00:1::10", "fd00:1::11", 17, udp))
    kind, text = verdict(parse_pcap(_pcap([tunnelled])), "fd00:10:244::2", "fd00:10:244:1::2")
    assert kind == "vxlan" and "outer fd00:1::10 -> fd00:1::11" in text, text
    kind, text = verdict(parse_pcap(_pcap([inner])), "fd00:10:244::2", "fd00:10:244:1::2")
    assert kind == "plain", text
    assert parse_pcap(_pcap([_ether6(b"\x60" + b"\x00" * 20)])) == []  # a truncated header is no packet


@pytest.mark.parametrize(
    ("dport", "header"),
    [
        (8472, b"\x00" * 8),  # VXLAN without the I flag
        (6081, b"\x00\x00\x08\x00\x00\x00\x01\x00"),  # Geneve carrying IPv4, not Ethernet
        (6081, b"\x40\x00\x65\x58\x00\x00\x01\x00"),  # Geneve version 1
        (5000, VXLAN),  # no protocol's port
    ],
)
def test_other_udp_is_not_taken_for_a_tunnel(dport: int, header: bytes) -> None:
    packets = parse_pcap(_pcap([_outer(dport, header)]))
    assert verdict(packets, INNER_SRC, INNER_DST)[0] == "none"
    assert packets[0].tunnel is None


def test_facts_and_lookups() -> None:
    vxlan, geneve = tunnel_protocol("vxlan"), tunnel_protocol("geneve")
    assert (vxlan.default_port, geneve.default_port) == (8472, 6081)
    assert tunnel_of("podnet_vxlan", "vxlan") is vxlan and tunnel_of("lxc1234", "veth") is None
    assert tunnel_of("podnet_geneve", "veth") is tunnel_protocol("geneve") and tunnel_of(None, None) is None
    assert {p.device for p in all_protocols()} == {"podnet_vxlan", "podnet_geneve"}
    mac, dst = "02:00:00:00:00:01", ipaddress.ip_address("172.16.2.3")
    assert vxlan.peer_entries("podnet_vxlan", mac, dst) == (FdbEntry(mac, dst, "podnet_vxlan"),)
    assert geneve.peer_entries("podnet_geneve", mac, dst) == (FdbEntry(mac, dst, "podnet_geneve"),)


@pytest.mark.parametrize(
    ("name", "kernel_has", "expected"),
    [
        ("vxlan", {"vxlan"}, None),
        ("vxlan", set(), "'vxlan' needs the kernel's vxlan module, which this kernel lacks; "
                         "use routingMode=native"),
        ("geneve", {"vxlan", "veth"}, None),  # in eBPF: no geneve driver needed
        ("geneve", {"vxlan"}, "'geneve' needs veth devices, which this kernel lacks; "
                              "use tunnelProtocol=vxlan"),
    ],
)  # fmt: skip
def test_unsupported_reason(name: str, kernel_has: set[str], expected: str | None) -> None:
    assert unsupported_reason(tunnel_protocol(name), lambda kind: kind in kernel_has) == expected
