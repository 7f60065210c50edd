"""Pure: the guard's drop rules log to NFLOG first (or not), NFLOG messages decode, and the
agent's drop monitor keeps events with a cursor and counts them by reason."""

from __future__ import annotations

import ipaddress
import socket
import struct

from podnet.agent.drops import DropMonitor
from podnet.config import load_config
from podnet.datapath.guard import DROP_GROUP, EndpointSource, apply_script, plan_guard
from podnet.datapath.kernel.nflog import LoggedPacket, parse_messages


def _plan(drop_events: bool) -> str:
    return apply_script(
        plan_guard(
            [EndpointSource("lxc1", (ipaddress.ip_address("10.244.1.2"),))],
            [ipaddress.ip_address("192.168.1.11")],
            8472,
            [(ipaddress.ip_address("192.168.1.254"), 2379)],
            drop_events=drop_events,
        )
    )


def test_every_drop_rule_is_logged_first_with_its_reason_and_a_rate_limit() -> None:
    rules = [line for line in _plan(True).splitlines() if line.startswith("add rule")]
    drops = [i for i, r in enumerate(rules) if r.endswith(" drop")]
    assert drops
    for i in drops:
        log, drop = rules[i - 1], rules[i]
        assert f"log group {DROP_GROUP} prefix" in log and "limit rate" in log, (log, drop)
        match = drop.split(" counter name ")[0].split(" update @")[0]
        assert log.startswith(match + " limit rate"), (log, drop)
        reason = drop.split("counter name ")[1].split()[0] if "counter name" in drop else "spoofed"
        assert log.endswith(f'prefix "podnet-drop:{reason}"'), log


def test_no_log_rules_when_drop_events_are_off() -> None:
    assert "log group" not in _plan(False)
    assert load_config({"bpf": {"events": {"drop": {"enabled": False}}}}).drop_events is False
    assert load_config({}).drop_events is True


def _nflog_message(prefix: str, payload: bytes, indev: int) -> bytes:
    def attr(kind: int, data: bytes) -> bytes:
        raw = struct.pack("=HH", 4 + len(data), kind) + data
        return raw + b"\0" * ((4 - len(raw) % 4) % 4)

    attrs = attr(10, prefix.encode() + b"\0") + attr(4, struct.pack("!I", indev)) + attr(9, payload)
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(DROP_GROUP)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (4 << 8) | 0, 0, 0, 0) + body


def test_nflog_messages_decode_to_addresses_ports_and_prefix() -> None:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0,
                     socket.inet_aton("10.244.77.7"), socket.inet_aton("10.244.2.2"))  # fmt: skip
    udp = struct.pack("!HHHH", 40000, 9999, 8, 0)
    data = _nflog_message("podnet-drop:spoofed", ip + udp, 7) * 2
    packets = list(parse_messages(data))
    assert len(packets) == 2
    p = packets[0]
    assert (p.prefix, p.indev, p.src, p.dst, p.proto, p.sport, p.dport) == (
        "podnet-drop:spoofed", 7, "10.244.77.7", "10.244.2.2", "UDP", 40000, 9999,
    )  # fmt: skip
    assert list(parse_messages(b"\x10\x00")) == []  # a truncated datagram decodes to nothing


def test_the_monitor_keeps_podnet_events_with_a_cursor() -> None:
    monitor = DropMonitor(lambda: load_config({}))

    def packet(prefix: str) -> LoggedPacket:
        return LoggedPacket(prefix, 0, 0, 4, "10.244.77.7", "10.244.2.2", "UDP", 40000, 9999, 1.5)

    monitor.record([packet("podnet-drop:spoofed"), packet("other:thing"), packet("podnet-drop:pod_to_node")])
    first = monitor.events(0)
    assert [e["reason"] for e in first["events"]] == ["spoofed", "pod_to_node"] and first["next"] == 2
    assert monitor.events(first["next"])["events"] == []
    monitor.record([packet("podnet-drop:spoofed")])
    assert [e["seq"] for e in monitor.events(2)["events"]] == [3]
    assert monitor.status()["byReason"] == {"spoofed": 2, "pod_to_node": 1}
