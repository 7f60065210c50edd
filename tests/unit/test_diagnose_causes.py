"""Pure: the causes diagnose and status name since issue 29 (special routes, forwarding, wrong
ways and neighbours, BIRD down, pod firewalls, qdiscs, a node's own output), the qdisc reader,
where an unanswered echo was lost, both families in one answer, and kernel drops as recent rises."""

from __future__ import annotations

import ipaddress
import json

import pytest

from podnet.agent.drops import prune, recent_rises
from podnet.verify.diagnose import Diagnosis, PathWalk, families_json
from podnet.verify.explain import (
    Drop,
    PeerHealth,
    ProbeLoss,
    bird_down,
    forwarding_off,
    misroute,
    peer_health,
    probe_drop,
    special_route,
    traced_drop,
    wrong_neighbour,
)
from podnet.verify.follow import ProbeRun, Sighting, locate, qdisc_drops
from podnet.verify.status import combine_health
from podnet.verify.view import Place

POD2 = ipaddress.ip_address("10.244.2.2")


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("blackhole", "silently"),
        ("unreachable", "host unreachable"),
        ("prohibit", "administratively prohibited"),
    ],
)
def test_a_special_route_names_itself_and_the_command_that_removes_it(kind: str, answer: str) -> None:
    drop = special_route("r2", "router", "pn-x-r2", POD2, kind, f"{kind} 10.244.2.2/32", "")
    assert (drop.host, drop.kind) == ("r2", kind)
    assert f"router r2 has a {kind} route for 10.244.2.2" in drop.reason and answer in drop.reason
    assert f"ip -n pn-x-r2 route del {kind} 10.244.2.2/32" in drop.fix
    bird = special_route("r2", "router", "pn-x-r2", POD2, kind, f"{kind} 10.244.2.0/24", "bird")
    assert "installed by bird" in bird.reason and "BGP configuration" in bird.fix


def test_forwarding_off_names_the_sysctl_per_family() -> None:
    v4 = forwarding_off("r2", "router", "pn-x-r2", 4, "eth1", "net.ipv4.ip_forward")
    assert v4.kind == "forwarding" and "does not forward IPv4:" in v4.reason
    assert "sysctl -w net.ipv4.ip_forward=1" in v4.fix
    dev = forwarding_off("r2", "router", "pn-x-r2", 4, "eth1", "net.ipv4.conf.eth1.forwarding")
    assert "IPv4 on eth1" in dev.reason
    v6 = forwarding_off("node2", "node", "pn-x-node2", 6, "eth0", "net.ipv6.conf.all.forwarding")
    assert "IPv6" in v6.reason and "to its pods" in v6.reason and "every round" in v6.fix


def test_a_misroute_names_the_route_and_who_holds_the_address() -> None:
    drop = misroute("node2", "node", "pn-x-node2", POD2, "10.244.2.0/24 dev eth0", "eth0", "pod2", "")
    assert drop.kind == "misroute"
    assert "eth0 does not lead to pod2, which holds 10.244.2.2" in drop.reason
    assert "ip -n pn-x-node2 route del 10.244.2.0/24 dev eth0" in drop.fix
    ours = misroute("node2", "node", "pn-x-node2", POD2, "10.244.2.0/24 dev eth0", "eth0", "pod2", "podnet")
    assert "(proto podnet)" in ours.reason and "podnet status --node node2" in ours.fix


def test_a_wrong_neighbour_says_whose_mac_it_is() -> None:
    nh = ipaddress.ip_address("172.16.3.2")
    args = ("r2", "router", "pn-x-r2", nh, "eth1", "02:00:00:00:00:99", "PERMANENT", "node2", "eth0 aa:bb")
    nobody = wrong_neighbour(*args, "")
    assert nobody.kind == "neighbour" and "static entry" in nobody.reason
    assert "02:00:00:00:00:99" in nobody.reason and "no device's in the lab" in nobody.reason
    assert "ip -n pn-x-r2 neigh del 172.16.3.2 dev eth1" in nobody.fix
    assert "is node1's" in wrong_neighbour(*args, "node1").reason


def test_bird_down_is_a_cause_with_a_way_to_start_it() -> None:
    cause, fix = bird_down("r1", "its control socket is gone", "podnet lab up starts it")
    assert "BIRD is not running on router r1" in cause and "no router learns" in cause
    assert fix.startswith("start BIRD on r1: podnet lab up starts it")


def test_a_pods_own_firewall_is_not_blamed_on_podnet_or_the_routers() -> None:
    rule = "inet fault input policy drop (verdict drop)"
    pod = traced_drop("pod2", "pod", "pn-x-pod2", rule, "the probe")
    assert pod.kind == "pod-firewall" and "pod pod2's own firewall drops the probe" in pod.reason
    assert "podnet passed the packet" in pod.fix
    guard = traced_drop("node1", "node", "pn-x-node1", "inet podnet_guard fwd rule drop", "the probe")
    assert guard.kind == "policy"
    router = traced_drop("r1", "router", "pn-x-r1", "inet f fwd rule tcp drop", "TCP x", "")
    assert router.kind == "filter" and "router r1 drops TCP x in nftables" in router.reason


def test_a_qdisc_that_dropped_is_named_before_anything_else_uncounted() -> None:
    loss = ProbeLoss("r1", "router", "", "a -> b", 1500, False, "", "net1", ns="pn-x-r1",
                     qdiscs=(("to-r2 root qdisc pfifo limit 0", 3),))  # fmt: skip
    drop = probe_drop(loss)
    assert drop.kind == "qdisc" and "pfifo limit 0" in drop.reason and "dropped 3 packets" in drop.reason
    assert "tc -n pn-x-r1 qdisc del dev to-r2 root" in drop.fix


def test_qdisc_drops_are_read_from_tc_json() -> None:
    text = json.dumps(
        [
            {"kind": "pfifo", "handle": "8001:", "root": True, "dev": "to-r2", "options": {"limit": 0},
             "drops": 4},
            {"kind": "noqueue", "handle": "0:", "dev": "lo", "root": True, "options": {}, "drops": 0},
            {"kind": "fq_codel", "parent": "1:2", "dev": "eth0", "drops": 1},
        ]
    )  # fmt: skip
    assert qdisc_drops(text) == {
        "to-r2 root qdisc pfifo limit 0": 4,
        "lo root qdisc noqueue": 0,
        "eth0 parent 1:2 qdisc fq_codel": 1,
    }
    assert qdisc_drops("not json") == {} and qdisc_drops("") == {}


def test_an_echo_seen_everywhere_but_unanswered_is_lost_where_the_reply_ends() -> None:
    src = Place("pod1", ipaddress.ip_address("10.244.1.2"), "pod")
    dst = Place("pod2", POD2, "pod")
    path, back = ["pod1", "node1", "pod2"], ["pod2", "node1", "pod1"]
    seen = [
        Sighting("pod1", "eth0", True, False, False, False),
        Sighting("node1", "lxc1", False, False, False, False),
        Sighting("node1", "lxc2", True, False, False, False),
        Sighting("pod2", "eth0", False, False, False, False),
        Sighting("pod2", "eth0", True, False, True, False),
        Sighting("node1", "lxc2", False, False, True, False),
        Sighting("node1", "lxc1", True, False, True, False),
        Sighting("pod1", "eth0", False, False, True, False),
    ]
    run = ProbeRun(src, dst, 1500, tuple(path), (True, True), (False, False), "", tuple(seen))
    loss = locate(run, path, back)
    assert loss is not None and (loss.host, loss.reply) == ("pod1", True)


def _diag(version: int, drop: Drop | None) -> Diagnosis:
    net = "10.244.{}.2" if version == 4 else "fd00:10:244:{}::2"
    src = Place("pod1", ipaddress.ip_address(net.format(1)), "pod")
    dst = Place("pod2", ipaddress.ip_address(net.format(2)), "pod")
    run = ProbeRun(src, dst, 1500, ("pod1", "pod2"), (True, True), (True, True))
    return Diagnosis(src, dst, 1500, PathWalk((), drop), None, run)


def test_both_families_answer_together_and_the_failing_one_leads() -> None:
    drop = Drop("r1", "filter", "router r1 drops it", "allow it")
    doc = families_json([_diag(4, None), _diag(6, drop)])
    assert doc["ok"] is False and doc["status"] == "broken"
    assert doc["dst"]["ip"] == "fd00:10:244:2::2"
    assert doc["verdict"]["reason"] == "over IPv6 (IPv4 works): router r1 drops it"
    assert [(f["family"], f["status"]) for f in doc["families"]] == [(4, "works"), (6, "broken")]
    both = families_json([_diag(4, None), _diag(6, None)])
    assert both["ok"] and both["dst"]["ip"] == "10.244.2.2" and both["verdict"] is None
    one = families_json([_diag(4, None)])
    assert "families" not in one and one["status"] == "works"


def test_peer_health_over_families_and_a_local_send_error() -> None:
    ok, bad = ("ok", ""), ("unreachable", "r1 drops it")
    assert combine_health([(4, ok), (6, ok)]) == ("ok", "")
    assert combine_health([(4, ok), (6, bad)]) == ("unreachable", "IPv6: r1 drops it (IPv4 ok)")
    assert combine_health([(4, bad)]) == bad
    state, text = peer_health(
        PeerHealth("node2", "172.16.3.2", "tunnel", "VXLAN (UDP 8472)", False, True, None, 1450,
                   "podnet_vxlan tx_errors +1", "node1")
    )  # fmt: skip
    assert state == "unreachable" and text.startswith("node1 itself drops the VXLAN (UDP 8472) packets")
    assert "input filter" not in text


def test_kernel_drops_are_recent_only_when_they_rose_within_the_window() -> None:
    samples: list[tuple[float, dict[str, int]]] = [(0.0, {"Ip.InDiscards": 5})]
    assert recent_rises(samples, {"Ip.InDiscards": 5}, 10.0, 300.0) == {}
    assert recent_rises(samples, {"Ip.InDiscards": 7, "Ip6.X": 1}, 10.0, 300.0) == {
        "Ip.InDiscards": 2,
        "Ip6.X": 1,
    }
    samples += [(200.0, {"Ip.InDiscards": 7}), (400.0, {"Ip.InDiscards": 7}), (500.0, {"Ip.InDiscards": 9})]
    # at 600 the window starts at 300: the baseline is the sample of 200 (7)
    assert recent_rises(samples, {"Ip.InDiscards": 9}, 600.0, 300.0) == {"Ip.InDiscards": 2}
    prune(samples, 600.0, 300.0)
    assert [at for at, _ in samples] == [200.0, 400.0, 500.0]
    assert recent_rises([], {"Ip.InDiscards": 1}, 0.0, 300.0) == {}
