"""Pure: the sentences diagnose prints, path classification, pcap decoding, iperf3 parsing, dot."""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path

import pytest

from podnet.lab.diagram import Picture, to_dot
from podnet.verify.capture import parse_pcap, verdict
from podnet.verify.explain import MtuContext, RouteContext, mtu_drop, no_neighbour, no_route
from podnet.verify.perf import PerfError, PerfReport, PerfResult, parse_iperf, plot
from podnet.verify.status import classify_path, routing_summary

POD2 = ipaddress.ip_address("10.244.2.2")
CIDR2 = ipaddress.ip_network("10.244.2.0/24")


def test_router_without_pod_route_in_native_mode_names_bgp() -> None:
    drop = no_route(RouteContext("r1", "router", POD2, CIDR2, "native"))
    assert drop.host == "r1"
    assert drop.reason.startswith("router r1 has no route to 10.244.2.0/24")
    assert "native routing needs BGP (bgp.enabled) or use routingMode=tunnel" in drop.reason


def test_lost_reply_from_outside_names_masquerade() -> None:
    ctx = RouteContext(
        "r1",
        "router",
        ipaddress.ip_address("10.244.1.2"),
        ipaddress.ip_network("10.244.1.0/24"),
        "tunnel",
        reply_to_pod_from_outside=True,
        src_node="node1",
    )
    drop = no_route(ctx)
    assert "reply" in drop.reason
    assert "masquerade" in drop.fix and "node1" in drop.fix


@pytest.mark.parametrize(
    ("role", "cidr", "needle"),
    [("node", CIDR2, "podnet status --node node1"), ("external", None, "add a route")],
)
def test_no_route_other_hosts(role: str, cidr: ipaddress.IPv4Network | None, needle: str) -> None:
    drop = no_route(RouteContext("node1", role, POD2, cidr, "native"))
    assert needle in drop.fix


def test_mtu_drop_names_device_sizes_and_both_fixes() -> None:
    drop = mtu_drop(
        MtuContext("r2", "segment net2 port node2", 1400, 1500, 1450, 50, "ip link set x mtu {mtu}")
    )
    assert drop.kind == "mtu"
    assert "1450 + 50 tunnel = 1500" in drop.reason and "MTU 1400" in drop.reason
    assert "ip link set x mtu 1500" in drop.fix and "cluster MTU to 1350" in drop.fix


def test_missing_neighbour_on_tunnel_vs_arp() -> None:
    assert no_neighbour("node1", POD2, "podnet_vxlan", "").kind == "no-neighbour"
    assert no_neighbour("node1", POD2, "eth0", "FAILED").kind == "arp"


@pytest.mark.parametrize(
    ("dev", "kind", "gw", "expected"),
    [
        ("podnet_vxlan", "vxlan", "10.244.2.1", "tunnel"),
        ("eth0", "veth", "192.168.1.11", "direct-route"),
        ("eth0", "veth", "172.16.2.1", "underlay-router"),
        (None, "", None, "unreachable"),
    ],
)
def test_classify_path(dev: str | None, kind: str, gw: str | None, expected: str) -> None:
    path = classify_path(dev, kind, gw, "192.168.1.11", {"172.16.2.1": "r1"})
    assert path.reach == expected
    if expected == "underlay-router":
        assert "r1" in path.text


def test_routing_summary() -> None:
    assert routing_summary({"mode": "tunnel", "tunnelProtocol": "vxlan"}) == "Tunnel [vxlan]"
    assert routing_summary({"mode": "native", "autoDirectNodeRoutes": True}) == "Native, autoDirectNodeRoutes"
    hybrid = {"mode": "native", "modeName": "native+tunnelFallback", "tunnelProtocol": "geneve"}
    assert routing_summary({**hybrid, "autoDirectNodeRoutes": True}) == (
        "Native, autoDirectNodeRoutes, tunnel fallback [geneve]"
    )
    # an agent from before modeName: the mode serving "native" that tunnels
    assert routing_summary({"mode": "native", "tunnelProtocol": "vxlan"}) == "Native, tunnel fallback [vxlan]"


def _eth_ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + payload


def _pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    return out


def test_pcap_vxlan_and_plain() -> None:
    inner = _eth_ipv4("10.244.1.2", "10.244.2.2", 1, b"\x08\x00" + b"\x00" * 6)
    udp = struct.pack("!HHHH", 40000, 8472, 8 + 8 + len(inner), 0) + b"\x08\x00\x00\x00\x00\x00\x01\x00"
    vx = _eth_ipv4("172.16.2.2", "172.16.3.2", 17, udp + inner)
    packets = parse_pcap(_pcap([vx]))
    assert packets[0].tunnel == "vxlan" and packets[0].inner_dst == "10.244.2.2"
    kind, sentence = verdict(packets, "10.244.1.2", "10.244.2.2")
    assert kind == "vxlan" and sentence.startswith("VXLAN UDP/8472 carrying 10.244.1.2 -> 10.244.2.2")
    plain = parse_pcap(_pcap([inner]))
    assert verdict(plain, "10.244.1.2", "10.244.2.2") == (
        "plain",
        "plain 10.244.1.2 -> 10.244.2.2, no encapsulation",
    )
    assert verdict([], "10.244.1.2", "10.244.2.2")[0] == "none"
    with pytest.raises(ValueError):
        parse_pcap(b"x" * 40)


def test_parse_iperf_and_ratio(tmp_path: Path) -> None:
    doc = {"end": {"sum_received": {"bits_per_second": 9.5e9}, "sum_sent": {"retransmits": 3}}}
    assert parse_iperf(json.dumps(doc)) == (9.5, 3)
    with pytest.raises(PerfError, match="unable to connect"):
        parse_iperf(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(PerfError):
        parse_iperf("garbage")
    host = (10.0, 12.0, 11.0)
    vxlan = (9.0, 8.0, 10.0)
    paired = tuple(v / h for v, h in zip(vxlan, host, strict=True))  # each repetition's own ratio
    results = (PerfResult("host", host), PerfResult("vxlan", vxlan, ratios=paired))
    report = PerfReport(results, "host", 1, 3, results)
    assert report.ratio("vxlan") == pytest.approx(sorted(paired)[1])  # the median of the pairs
    assert report.ratio("host") == 1.0
    assert results[1].spread == (min(paired), max(paired)) and results[1].wide  # 0.667..0.909
    doc = report.to_json()
    assert doc["results"][1]["medianGbps"] == 9.0 and doc["metrics"][1]["wide"] is True
    assert "taskset" in doc["method"]
    png = plot(report, tmp_path / "p.png", "t")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sockperf_ping_pong_is_read_as_transactions_per_second() -> None:
    from podnet.verify.perf import parse_sockperf

    out = (
        "sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=525714\n"
        "sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=407220; ReceivedMessages=407220\n"
    )
    assert parse_sockperf(out) == pytest.approx(407220 / 1.55)
    with pytest.raises(PerfError, match="no result"):
        parse_sockperf("sockperf: ERROR: connect failed")
    with pytest.raises(PerfError, match="no answers"):
        parse_sockperf("[Valid Duration] RunTime=1.0 sec; SentMessages=10; ReceivedMessages=0")


def test_reports_of_several_labs_combine_with_their_own_pairs() -> None:
    from podnet.verify.perf import FORWARD, RR, combine

    def lab(host: tuple[float, ...], pod: tuple[float, ...]) -> PerfReport:
        ratios = tuple(p / h for p, h in zip(pod, host, strict=True))
        every = tuple(
            r
            for m in (FORWARD, RR)
            for r in (
                PerfResult("host a->b", host, metric=m),
                PerfResult("pod x->y", pod, metric=m, ratios=ratios),
            )
        )
        return PerfReport(tuple(r for r in every if r.metric is FORWARD), "host a->b", 1, 2, every)

    both = combine({"native": lab((10.0, 10.0), (9.0, 11.0)), "vxlan": lab((20.0, 20.0), (16.0, 18.0))})
    assert [r.label for r in both.results] == ["host", "native", "vxlan"]
    assert both.ratio("vxlan") == pytest.approx(0.85) and both.ratio("native") == pytest.approx(1.0)
    assert both.of("vxlan", "request/response").ratio == pytest.approx(0.85)


def test_diagram_dot_has_segments_pods_and_reach() -> None:
    pic = Picture(
        "lab",
        "Tunnel [vxlan]",
        (("net1", "172.16.2.0/24", 1500),),
        (("node1", "node", "node1"), ("node2", "node", "node2"), ("r1", "router", "r1")),
        (("node1", "net1", "eth0"),),
        (),
        (("pod1", "node1", "10.244.1.2"),),
        (("node1", "node2", "tunnel", "VXLAN tunnel via podnet_vxlan"),),
    )
    dot = to_dot(pic)
    assert '"seg:net1"' in dot and '"pod1"' in dot
    assert '"node1" -- "node2" [style=dashed, color="#1f77b4"' in dot


def test_kvstore_line_tells_ok_from_unreachable() -> None:
    from podnet.statusdoc.datastore import ETCD, StoreHealth
    from podnet.verify.render import kvstore_line

    ok = {
        "state": "ok",
        "version": "3.4.23",
        "active": "http://a:2379",
        "endpoints": ["http://a:2379", "http://b:2379", "http://c:2379"],
        "lastSuccess": 995.0,
    }
    line = kvstore_line(StoreHealth.from_json(ok, ETCD), now=1000.0)
    assert line == "Ok   etcd-3.4.23 http://a:2379 (3 endpoints), last success 5s ago"
    down = {**ok, "state": "unreachable", "failingSince": 988.0, "error": "connection refused"}
    assert kvstore_line(StoreHealth.from_json(down, ETCD), now=1000.0) == (
        "Unreachable since 12s: connection refused (http://a:2379 (3 endpoints), last success 5s ago)"
    )


def test_guard_line_names_its_parts_and_its_drops() -> None:
    from podnet.verify.render import guard_line

    assert guard_line({"enabled": False}) == "Disabled"
    on = {
        "enabled": True,
        "sourceVerification": True,
        "isolation": True,
        "drops": {"tunnel_foreign": 3, "pod_to_bgp": 0},
        "endpoints": [
            {"hostIfname": "lxc1", "addresses": ["10.244.1.2"], "spoofDrops": 25},
            {"hostIfname": "lxc2", "addresses": ["10.244.1.3"], "spoofDrops": 0},
        ],
    }
    assert guard_line(on) == (
        "nftables [source verification, isolation], drops: tunnel_foreign 3, spoofed lxc1 (10.244.1.2) 25"
    )
