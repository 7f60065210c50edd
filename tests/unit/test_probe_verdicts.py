"""Pure: where followed probes stopped (``follow.locate``), what that means (``explain.probe_drop``,
``explain.peer_health``), and the kernel counters they are read from."""

from __future__ import annotations

import ipaddress

from podnet.datapath.kernel.dropstats import parse_kernel_counters, parse_link_drops
from podnet.verify.explain import PeerHealth, ProbeLoss, peer_health, probe_drop
from podnet.verify.follow import ProbeRun, Sighting, locate
from podnet.verify.view import Place

SRC = Place("pod1", ipaddress.ip_address("10.244.1.2"), "pod")
DST = Place("pod2", ipaddress.ip_address("10.244.2.2"), "pod")
PATH = ["pod1", "node1", "r1", "node2", "pod2"]
BACK = list(reversed(PATH))


def _trail(
    hosts: list[str], reply: bool, big: bool, tunnel: tuple[str, ...] = (), last_out: bool = False
) -> list[Sighting]:
    """The sightings of a probe that passed every host of ``hosts`` (in, then out); the last one
    only took it in, unless ``last_out``."""
    out = []
    for i, h in enumerate(hosts):
        inside = h in tunnel
        if i > 0:
            out.append(Sighting(h, "in0", False, inside, reply, big))
        if i < len(hosts) - 1 or last_out:
            out.append(Sighting(h, "out0", True, inside, reply, big))
    return out


def _run(sightings: list[Sighting], answered: tuple[bool, bool]) -> ProbeRun:
    return ProbeRun(SRC, DST, 1450, tuple(PATH), (True, True), answered, "", tuple(sightings))


def test_answered_probes_locate_nothing() -> None:
    seen = [*_trail(PATH, False, False), *_trail(BACK, True, False)]
    assert locate(_run(seen, (True, True)), PATH, BACK) is None


def test_a_probe_taken_in_and_not_passed_on_is_lost_there() -> None:
    seen = _trail(PATH[:3], False, False, tunnel=("r1",))  # r1 took it in, inside the tunnel
    seen.append(Sighting("r1", "net1", False, True, False, False))
    seen = [s for s in seen if not (s.host == "r1" and s.outgoing)]
    loss = locate(_run(seen, (False, False)), PATH, BACK)
    assert loss is not None and (loss.host, loss.between, loss.reply, loss.big) == ("r1", "", False, False)
    assert loss.inside_tunnel


def test_a_probe_that_left_and_never_arrived_is_lost_between() -> None:
    seen = _trail(PATH[:3], False, False, last_out=True)  # r1 passed it on; node2 never saw it
    loss = locate(_run(seen, (False, False)), PATH, BACK)
    assert loss is not None and (loss.host, loss.between) == ("r1", "node2")


def test_a_lost_echo_reply_is_found_on_the_way_back() -> None:
    seen = [*_trail(PATH, False, False), *_trail(BACK[:2], True, False, last_out=True)]  # r1 never saw it
    loss = locate(_run(seen, (False, False)), PATH, BACK)
    assert loss is not None and loss.reply and (loss.host, loss.between) == ("node2", "r1")
    assert _trail(PATH[:2], False, False, last_out=True)[-1].outgoing


def test_only_the_full_size_probe_lost_is_looked_at_after_the_small_one_passed() -> None:
    small = [*_trail(PATH, False, False), *_trail(BACK, True, False)]
    big = [s for s in _trail(PATH, False, True) if not (s.host == "r1" and s.outgoing)]
    big = [s for s in big if s.host not in ("node2", "pod2")]
    loss = locate(_run([*small, *big], (True, False)), PATH, BACK)
    assert loss is not None and loss.big and loss.host == "r1"


def _loss(**kw: object) -> ProbeLoss:
    base: dict[str, object] = {
        "host": "r1", "role": "router", "between": "", "direction": "pod1 -> pod2", "size": 1450,
        "small_passed": False, "tunnel": "", "ns": "pn-x-r1",
    }  # fmt: skip
    return ProbeLoss(**{**base, **kw})  # type: ignore[arg-type]


def test_a_traced_nft_drop_names_the_rule_and_the_tunnel_port() -> None:
    drop = probe_drop(
        _loss(nft_drops=("inet fw fwdc rule udp dport 8472 drop (verdict drop)",), tunnel="VXLAN (UDP 8472)")
    )
    assert (drop.host, drop.kind) == ("r1", "filter")
    assert "udp dport 8472 drop" in drop.reason and "VXLAN (UDP 8472)" in drop.reason
    assert "open between every pair of nodes" in drop.fix


def test_counters_name_mtu_and_no_route() -> None:
    mtu = probe_drop(_loss(kernel=(("Ip.FragFails", 2),), kernel_meaning=("mtu",), small_passed=True))
    assert mtu.kind == "mtu" and "Ip.FragFails +2" in mtu.reason and "black hole" in mtu.reason
    route = probe_drop(_loss(kernel=(("IpExt.InNoRoutes", 2),), kernel_meaning=("no-route",)))
    assert route.kind == "no-route" and "bgp.enabled" in route.fix


def test_nothing_counted_is_inconclusive_with_the_next_step() -> None:
    drop = probe_drop(_loss(iface="to-r2"))
    assert drop.kind == "inconclusive" and drop.reason.startswith("inconclusive")
    assert "on to-r2" in drop.reason and "tc -n pn-x-r1 filter show dev to-r2 ingress" in drop.fix
    between = probe_drop(_loss(between="node2"))
    assert between.kind == "inconclusive" and "never seen at node2" in between.reason


def test_peer_health_combines_the_probes() -> None:
    base = PeerHealth("node2", "172.16.3.2", "tunnel", "VXLAN (UDP 8472)", True, None, True, 1450)
    assert peer_health(base) == ("ok", "")
    state, text = peer_health(
        PeerHealth("node2", "172.16.3.2", "tunnel", "VXLAN (UDP 8472)", False, True, None)
    )
    assert state == "unreachable" and "VXLAN (UDP 8472) is dropped" in text
    state, text = peer_health(PeerHealth("node2", "172.16.3.2", "underlay-router", "", False, True, None))
    assert "does not route the pod CIDR" in text
    state, text = peer_health(PeerHealth("node2", "172.16.3.2", "tunnel", "VXLAN", False, False, None))
    assert "does not answer on the underlay either" in text
    state, text = peer_health(PeerHealth("node2", "172.16.3.2", "tunnel", "VXLAN", True, None, False, 1450))
    assert state == "degraded" and "1450 B" in text


def test_kernel_counters_are_read_from_the_proc_files() -> None:
    pairs = (
        "Ip: Forwarding InHdrErrors InAddrErrors OutNoRoutes FragFails\nIp: 1 0 3 4 5\n"
        "IpExt: InNoRoutes InTruncatedPkts\nIpExt: 7 0\n"
    )
    snmp6 = "Ip6InReceives 10\nIp6InNoRoutes 2\nIcmp6InMsgs 1\n"
    assert parse_kernel_counters(pairs, snmp6) == {
        "Ip.InHdrErrors": 0, "Ip.InAddrErrors": 3, "Ip.OutNoRoutes": 4, "Ip.FragFails": 5,
        "IpExt.InNoRoutes": 7, "Ip6.Ip6InNoRoutes": 2,
    }  # fmt: skip
    dev = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop\n"
        "  eth0: 100 2 0 3 0 0 0 0 200 4 0 5 0 0 0 0\n"
    )
    assert parse_link_drops(dev) == {"eth0": 8}


def test_a_real_hosts_status_takes_the_verdict_from_the_agents_own_probes() -> None:
    from podnet.verify.status import KernelPath, _agent_health

    tunnel = KernelPath("tunnel", "podnet_vxlan", None, "VXLAN tunnel via podnet_vxlan")
    probes = {
        "peers": [{"peer": "node2", "ok": True, "reachable": True}],
        "podSide": {"node2": {"address": "10.244.2.1", "ok": False}},
    }
    state, text = _agent_health(probes, "node2", "172.16.3.2", tunnel, (1450, "VXLAN (UDP 8472)"))
    assert state == "unreachable" and "VXLAN (UDP 8472) is dropped" in text
    probes["podSide"]["node2"]["ok"] = True  # type: ignore[index]
    assert _agent_health(probes, "node2", "172.16.3.2", tunnel, (1450, ""))[0] == "ok"
    assert _agent_health({}, "node2", "172.16.3.2", tunnel, (1450, ""))[0] == "unknown"


def test_the_pod_guards_own_drop_is_a_policy_verdict() -> None:
    drop = probe_drop(
        _loss(host="node1", role="node", nft_drops=("inet podnet_guard input rule ... drop (verdict drop)",))
    )
    assert drop.kind == "policy" and "pod guard" in drop.reason and "podnet drops" in drop.fix


def test_traced_drops_are_told_apart_by_the_tcp_probes_port() -> None:
    from podnet.verify.follow import trace_drops

    text = "\n".join(
        [
            'trace id aa ip fw fwdc packet: iif "net1" ip saddr 10.244.1.2 tcp sport 50000 tcp dport 47123 ',
            "trace id aa ip fw fwdc rule meta l4proto tcp drop (verdict drop)",
            'trace id bb inet fw fwdc packet: iif "net1" udp dport 8472 ',
            "trace id bb inet fw fwdc rule udp dport 8472 drop (verdict drop)",
            "trace id cc ip filter forward policy drop",
        ]
    )
    echo, tcp = trace_drops(text, 47123)
    assert tcp == ("ip fw fwdc rule meta l4proto tcp drop (verdict drop)",)
    assert echo == ("inet fw fwdc rule udp dport 8472 drop (verdict drop)", "ip filter forward policy drop")
