"""Dual stack (issue 16): every pod has an IPv4 and an IPv6 address; IPv6 pods reach each other
natively on one L2 (autoDirectNodeRoutes over the nodes' IPv6 addresses) and through IPv4 VXLAN
(route MTU 1450); IPv6 traffic to the world is masqueraded, pod-to-pod is not."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from itertools import permutations

import pytest
from labhelpers import Stream, agent_pid, capture, config_set, podnet_json, restart_agent, sh, wait_for

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import Topology, load_topology
from podnet.verify.probe import tcp_probe

pytestmark = pytest.mark.lab

WORLD6 = "fd00:1::100"


def _ips(topo: Topology) -> dict[str, tuple[str, str]]:
    state = st.LabState.load(topo.name)
    assert state is not None
    return {name: (info["ips"][0], info["ips"][1]) for name, info in state.info["podIPs"].items()}


def _reach6(topo: Topology, ips: dict[str, tuple[str, str]]) -> None:
    """Every pod reaches every other by IPv6, and is seen with its own IPv6 address. A route
    through a device whose IPv6 address is a second old may wait a round: probes retry a while."""
    for a, b in permutations(sorted(ips), 2):
        deadline = time.monotonic() + 10
        res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b][1])
        while not res.ok and time.monotonic() < deadline:
            time.sleep(0.3)
            res = tcp_probe(st.ns_name(topo.name, a), st.ns_name(topo.name, b), ips[b][1])
        assert res.ok, f"{a} -> {b} ({ips[b][1]}): {res.detail}"
        assert ips[a][1] in res.detail, f"{b} should see {a}'s own IPv6 address: {res.detail}"


def _ping6(topo: Topology, pod: str, dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "ip",
        "netns",
        "exec",
        st.ns_name(topo.name, pod),
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "1",
        *extra,
        dst,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


WORLD_BEHIND_R1 = "2001:db8:113::10"  # the world host of examples/dual-stack-bgp.yaml and ipv6-only.yaml


def _native_v6_across_routers(topo: Topology, ips: dict[str, tuple[str, str]]) -> None:
    """Seed 000's two subnets in IPv6: pods reach each other, the R1-R2 link carries them plain
    (no VXLAN), and IPv6 to the world leaves node2 as node2's own address (masqueraded)."""
    _reach6(topo, ips)
    a, b = ips["node1-p1"][1], ips["node2-p1"][1]
    with capture(topo, "r1", "to-r2", "ip6 and not udp port 8472") as link:
        assert _ping6(topo, "node1-p1", b).returncode == 0
    assert any(f"IP6 {a} > {b}: ICMP6, echo request" in line for line in link), link
    assert _ping6(topo, "node2-p1", WORLD_BEHIND_R1).returncode == 0  # neighbours resolved
    with capture(topo, "world", "eth0", "icmp6 and ip6[40] == 128") as seen:
        # three echoes, one answered is enough: what is checked is the source on the world's wire
        # (a single echo with a 1 s wait went unanswered once in a loaded full run)
        assert _ping6(topo, "node2-p1", WORLD_BEHIND_R1, "-c", "3", "-i", "0.2").returncode == 0
    assert any(f"fd00:3::2 > {WORLD_BEHIND_R1}" in line for line in seen), seen


def test_dual_stack_native_on_one_l2(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(load_topology("dual-stack"))
    ips = _ips(topo)
    assert ips["node1-p1"][1].startswith("fd00:10:244:") and ips["node1-p1"][0].startswith("10.244.")
    routes = sh(topo, "node1", "ip", "-6", "route", "show", "proto", "201")
    peer = next(line for line in routes.splitlines() if "via fd00:1::11" in line)
    assert peer.startswith("fd00:10:244:") and "dev eth0" in peer, routes
    _reach6(topo, ips)
    # to the world: masqueraded to node1's IPv6 address (pods keep theirs among themselves, above)
    assert _ping6(topo, "node1-p1", WORLD6).returncode == 0  # neighbours resolved
    with capture(topo, "world", "eth0", "icmp6 and ip6[40] == 128") as seen:
        assert _ping6(topo, "node1-p1", WORLD6).returncode == 0
    assert any(f"fd00:1::10 > {WORLD6}" in line for line in seen), seen
    assert not any(ips["node1-p1"][1] in line for line in seen), seen
    table = sh(topo, "node1", "nft", "list", "table", "ip6", "podnet")
    assert "fd00:10:244::/56" in table and "masquerade" in table
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    checks = {r["check"] for r in report["results"] if r["status"] == "pass"}
    assert report["ok"] and {"IPv6 pod-to-pod across nodes", "IPv6 full-size DF packet"} <= checks, report
    guard = cl.agent_request(topo.name, "node1", {"op": "status"})["guard"]
    assert not any(e["spoofDrops"] for e in guard["endpoints"]), guard  # DAD and MLD are no spoofing


def test_dual_stack_ipv6_pods_inside_ipv4_vxlan(lab_up: Callable[..., Topology]) -> None:
    sets = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
    topo = lab_up(apply_overrides(load_topology("dual-stack"), sets))
    ips = _ips(topo)
    _reach6(topo, ips)
    a, b = ips["node1-p1"][1], ips["node2-p1"][1]
    with capture(topo, "node1", "eth0", "udp port 8472") as outer:
        assert _ping6(topo, "node1-p1", b, "-M", "do", "-s", "1402").returncode == 0  # 1402 + 48 = 1450
    assert any(f"IP6 {a} > {b}: ICMP6, echo request" in line for line in outer), outer
    too_big = _ping6(topo, "node1-p1", b, "-M", "do", "-s", "1403")
    assert too_big.returncode != 0 and "mtu: 1450" in too_big.stderr, too_big
    assert "mtu 1450" in sh(topo, "node1-p1", "ip", "-6", "route", "show", "default")


def test_vxlan_over_an_ipv6_underlay(lab_up: Callable[..., Topology]) -> None:
    """underlayProtocol=ipv6: the VXLAN device sends from the node's IPv6 address, the overhead is
    70 bytes (route MTU 1430), and both families of pods ride inside IPv6 UDP."""
    sets = ["routingMode=tunnel", "autoDirectNodeRoutes=false", "underlayProtocol=ipv6"]
    topo = lab_up(apply_overrides(load_topology("dual-stack"), sets))
    ips = _ips(topo)
    _reach6(topo, ips)
    assert "local fd00:1::10 " in sh(topo, "node1", "ip", "-d", "link", "show", "podnet_vxlan")
    v4, v6 = ips["node2-p1"]
    with capture(topo, "node1", "eth0", "udp port 8472") as outer:
        assert _ping6(topo, "node1-p1", v6, "-M", "do", "-s", "1382").returncode == 0  # 1382 + 48 = 1430
        ping4 = ["ip", "netns", "exec", st.ns_name(topo.name, "node1-p1"), "ping", "-c", "1", "-W", "1"]
        assert subprocess.run([*ping4, "-M", "do", "-s", "1402", v4], capture_output=True).returncode == 0
    assert any(" IP6 fd00:1::10." in line and "> fd00:1::11.8472" in line for line in outer), outer
    assert any(f"> {v6}: ICMP6, echo request" in line for line in outer), outer
    assert any(f"> {v4}: ICMP echo request" in line for line in outer), outer
    too_big = _ping6(topo, "node1-p1", v6, "-M", "do", "-s", "1383")
    assert "mtu: 1430" in too_big.stderr, too_big


def test_live_mode_switch_keeps_ipv6_connections(lab_up: Callable[..., Topology]) -> None:
    """An IPv6 TCP connection between pods on two nodes survives native -> tunnel -> native."""
    topo = lab_up(load_topology("dual-stack"))
    ips = _ips(topo)
    _reach6(topo, ips)
    stream = Stream(st.ns_name(topo.name, "node1-p1"), st.ns_name(topo.name, "node2-p1"), ips["node2-p1"][1])
    try:
        stream.exchange()
        res = config_set(topo.name, "routingMode=tunnel", "autoDirectNodeRoutes=false")
        assert res.returncode == 0, res.stdout + res.stderr
        routes = sh(topo, "node1", "ip", "-6", "route", "show", "proto", "201")
        assert "dev podnet_vxlan" in routes and "via fd00:1::11" not in routes, routes
        stream.exchange()
        res = config_set(topo.name, "routingMode=native", "autoDirectNodeRoutes=true")
        assert res.returncode == 0, res.stdout + res.stderr
        stream.exchange()
        assert _ips(topo) == ips  # no pod was re-created
    finally:
        stream.close()


def test_mixed_racks_decide_per_family(lab_up: Callable[..., Topology]) -> None:
    """Hybrid routing in a dual-stack cluster whose underlay is IPv4 only: node1 reaches node2's
    IPv4 pods by a direct route and its IPv6 pods through VXLAN (no IPv6 node address to route
    via); node3, behind the router, through VXLAN in both families."""
    sets = ["ipv6.enabled=true", "ipv6NativeRoutingCIDR=fd00::/104"]
    topo = lab_up(apply_overrides(load_topology("mixed"), sets))
    ips = _ips(topo)
    _reach6(topo, ips)
    peers = {p["name"]: p for p in cl.agent_request(topo.name, "node1", {"op": "status"})["peers"]}
    v4, v6 = peers["node2"]["podCIDRs"]  # which CIDRs node2 got depends on the order nodes registered
    routes4 = sh(topo, "node1", "ip", "route", "show", "proto", "201")
    routes6 = sh(topo, "node1", "ip", "-6", "route", "show", "proto", "201")
    assert f"{v4} via 172.16.1.12 dev eth0" in routes4, routes4
    assert any(line.startswith(v6) and "dev podnet_vxlan" in line for line in routes6.splitlines()), routes6
    assert (
        peers["node2"]["reach"] == "direct-route" and f"IPv6 {v6} through the vxlan" in peers["node2"]["why"]
    )


def test_kubernetes_host_scope_dual_podcidrs(lab_up: Callable[..., Topology]) -> None:
    """ipam.mode kubernetes: kube-controller-manager gives each Node an IPv4 and an IPv6 pod CIDR
    (spec.podCIDRs), the agent hands out one address of each."""
    from lightkube.resources.core_v1 import Node

    from podnet.kube.client import connect
    from podnet.lab import kubeapi

    topo = lab_up(
        apply_overrides(load_topology("dual-stack"), ["datastore=kubernetes", "ipam.mode=kubernetes"])
    )
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        cidrs = client.get(Node, "node1").spec.podCIDRs
    finally:
        client.close()
    assert [c.split(".")[0] if "." in c else c.split(":")[0] for c in cidrs] == ["10", "fd00"], cidrs
    ips = _ips(topo)
    assert ipaddress.ip_address(ips["node1-p1"][1]) in ipaddress.ip_network(cidrs[1])
    _reach6(topo, ips)


def test_multi_pool_dual_stack_pool(lab_up: Callable[..., Topology]) -> None:
    """A multi-pool pool with IPv4 and IPv6 CIDRs: each node asks for and gets a CIDR of each family
    (sorting CIDRs of two families used to fail in the agent's status: a TypeError)."""
    pools = {"default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24},
                         "ipv6": {"cidrs": ["fd00:10:244::/56"], "maskSize": 64}}}  # fmt: skip
    sets = ["ipam.mode=multi-pool", f"ipam.operator.autoCreatePodIPPools={json.dumps(pools)}"]
    topo = lab_up(apply_overrides(load_topology("dual-stack"), sets))
    ips = _ips(topo)
    assert all(ipaddress.ip_address(v6) in ipaddress.ip_network("fd00:10:244::/56") for _, v6 in ips.values())
    _reach6(topo, ips)
    families = {u["family"] for u in cl.agent_request(topo.name, "node1", {"op": "status"})["ipam"]["pools"]}
    assert families == {4, 6}


def test_cluster_pool_on_kubernetes_gives_both_families(lab_up: Callable[..., Topology]) -> None:
    """The cluster-pool operator on the Kubernetes datastore writes an IPv4 and an IPv6 pod CIDR
    into each PodnetNode in one patch."""
    from podnet.kube.client import connect
    from podnet.kube.resources import PodnetNode
    from podnet.lab import kubeapi

    topo = lab_up(apply_overrides(load_topology("dual-stack"), ["datastore=kubernetes"]))
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        cidrs = [ipaddress.ip_network(c) for c in client.get(PodnetNode, "node1").spec["ipam"]["podCIDRs"]]
    finally:
        client.close()
    assert [c.version for c in cidrs] == [4, 6] and cidrs[1].subnet_of(
        ipaddress.ip_network("fd00:10:244::/56")
    )
    _reach6(topo, _ips(topo))


def test_native_bgp_across_two_subnets_in_both_families(lab_up: Callable[..., Topology]) -> None:
    """Seed 000 dual-stack: each node peers with its gateway router once per family; the routers
    learn both pod CIDRs of every node (BIRD ipv4 and ipv6 channels, over their own IPv6 link),
    IPv6 pods cross the routers unencapsulated with their own addresses, and IPv6 to the world
    leaves as the node's address."""
    topo = lab_up(load_topology("dual-stack-bgp"))
    ips = _ips(topo)
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    peers = {p["peerAddress"]: p for p in status["bgp"]["peers"]}
    assert peers["fd00:2::1"]["state"] == "established" and peers["fd00:2::1"]["family"] == "ipv6", peers
    assert peers["172.16.2.1"]["state"] == "established", peers
    node2_v6 = next(c for c in cl.agent_request(topo.name, "node2", {"op": "status"})["node"]["podCIDRs"]
                    if ":" in c)  # fmt: skip
    learnt = sh(topo, "r1", "ip", "-6", "route", "show", "proto", "bird")
    assert f"{node2_v6} via fd00:0:12::2 dev to-r2" in learnt, learnt  # from r2, over the v6 link
    ctl = str(st.lab_dir(topo.name) / "bird" / "r1.ctl")
    assert "BGP.as_path: 65002 64512" in sh(topo, "r1", "birdc", "-s", ctl, "show", "route", "all", node2_v6)
    _native_v6_across_routers(topo, ips)
    # a departure (SIGUSR1) withdraws the IPv6 pod CIDR too; the restarted agent announces it again
    os.kill(agent_pid(topo, "node2"), signal.SIGUSR1)
    wait_for(lambda: node2_v6 not in sh(topo, "r1", "ip", "-6", "route"), "r1 to drop node2's IPv6 CIDR", 15)
    restart_agent(topo, "node2")
    learnt_again = lambda: node2_v6 in sh(topo, "r1", "ip", "-6", "route", "show", "proto", "bird")  # noqa: E731
    wait_for(learnt_again, "r1 to learn node2's IPv6 pod CIDR again", 20)
    _reach6(topo, ips)


def test_ipv6_path_mtu_black_hole_is_found_by_packet_too_big(lab_up: Callable[..., Topology]) -> None:
    """Native dual stack across routers: with the routers' link lowered to 1400, the agent's DF
    probes to node2's IPv6 address come back as ICMPv6 "packet too big" and the report names the
    IPv6 path with the size that fits, beside the IPv4 one."""
    topo = lab_up(load_topology("dual-stack-bgp"))
    for router, dev in (("r1", "to-r2"), ("r2", "to-r1")):
        sh(topo, router, "ip", "link", "set", dev, "mtu", "1400")
    before = cl.agent_request(topo.name, "node1", {"op": "status"})["pathMTU"].get("checked", 0)
    os.kill(agent_pid(topo, "node1"), signal.SIGHUP)  # probe now
    report: dict[str, object] = {}

    def probed() -> bool:
        report.update(cl.agent_request(topo.name, "node1", {"op": "status"})["pathMTU"])
        return float(report.get("checked") or 0) > before

    wait_for(probed, "node1's agent to probe its peers after SIGHUP", 20)
    found = {p["address"]: p for p in report["peers"] if p["peer"] == "node2"}  # type: ignore[attr-defined]
    assert set(found) == {"172.16.3.2", "fd00:3::2"}, report
    v6 = found["fd00:3::2"]
    assert v6["ok"] is False and v6["required"] == 1500 and v6["discovered"] == 1400, v6
    assert "black hole" in v6["message"] and "set MTU to 1400" in v6["message"], v6
    assert "mtu 1400" in sh(topo, "node1", "ip", "-6", "route", "get", "fd00:3::2")  # learnt from the PTB


def _only_v6(topo: Topology) -> dict[str, tuple[str, str]]:
    """The pods' addresses in an IPv6-only cluster: exactly one each, IPv6 (as ``_ips`` shapes them)."""
    state = st.LabState.load(topo.name)
    assert state is not None
    found = {name: info["ips"] for name, info in state.info["podIPs"].items()}
    assert all(len(ips) == 1 and ":" in ips[0] for ips in found.values()), found
    return {name: ("", ips[0]) for name, ips in found.items()}


def test_ipv6_only_cluster_tunnels_in_ipv6_vxlan(lab_up: Callable[..., Topology]) -> None:
    """ipv4.enabled=false: pods get one IPv6 address and nothing IPv4 (no address, no route, no
    IPv4 masquerade table); VXLAN runs over the nodes' IPv6 addresses at route MTU 1430; the
    connectivity test runs its checks in IPv6 only; the node end of a new pod's veth has a usable
    link-local address at once (no DAD: the node can solicit the pod's address immediately)."""
    sets = ["ipv4.enabled=false", "routingMode=tunnel", "autoDirectNodeRoutes=false", "underlayProtocol=ipv6"]
    topo = lab_up(apply_overrides(load_topology("dual-stack"), sets))
    ips = _only_v6(topo)
    assert "inet " not in sh(topo, "node1-p1", "ip", "-4", "addr", "show", "dev", "eth0")
    assert sh(topo, "node1-p1", "ip", "-4", "route").strip() == ""
    assert "10.244." not in sh(topo, "node1", "ip", "-4", "route")
    veths = [line.split("@")[0] for line in sh(topo, "node1", "ip", "-br", "link").splitlines()]
    (veth,) = [v for v in veths if v.startswith("lxc")]
    assert "tentative" not in sh(topo, "node1", "ip", "-6", "addr", "show", "dev", veth)
    _reach6(topo, ips)
    a, b = ips["node1-p1"][1], ips["node2-p1"][1]
    with capture(topo, "node1", "eth0", "udp port 8472") as outer:
        assert _ping6(topo, "node1-p1", b, "-M", "do", "-s", "1382").returncode == 0  # 1382 + 48 = 1430
    assert any(" IP6 fd00:1::10." in line and "> fd00:1::11.8472" in line for line in outer), outer
    assert any(f"{a} > {b}: ICMP6, echo request" in line for line in outer), outer
    nft4 = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, "node1"), "nft", "list", "table", "ip", "podnet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "masquerade" not in nft4.stdout, nft4.stdout
    with capture(topo, "world", "eth0", "icmp6 and ip6[40] == 128") as seen:
        assert _ping6(topo, "node1-p1", WORLD6).returncode == 0
    assert any(f"fd00:1::10 > {WORLD6}" in line for line in seen), seen
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert status["routing"]["families"] == ["IPv6"] and status["masquerade"]["mode"] == "disabled"
    assert [str(c).count(":") > 0 for c in status["node"]["podCIDRs"]] == [True], status["node"]
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"] and all(r["check"].startswith("IPv6 ") for r in report["results"]), report


def test_ipv6_only_cluster_native_with_bgp(lab_up: Callable[..., Topology]) -> None:
    """IPv6-only pods routed natively across two subnets: each node opens only its IPv6 session,
    the routers carry only IPv6 pod CIDRs, and pods reach each other unencapsulated."""
    topo = lab_up(apply_overrides(load_topology("dual-stack-bgp"), ["ipv4.enabled=false"]))
    ips = _only_v6(topo)
    bgp = cl.agent_request(topo.name, "node1", {"op": "status"})["bgp"]
    assert [(p["peerAddress"], p["state"]) for p in bgp["peers"]] == [("fd00:2::1", "established")], bgp
    assert sh(topo, "r1", "ip", "-4", "route", "show", "proto", "bird").strip() == ""
    assert "via fd00:0:12::2 dev to-r2 proto bird" in sh(topo, "r1", "ip", "-6", "route")
    _reach6(topo, ips)
    a, b = ips["node1-p1"][1], ips["node2-p1"][1]
    with capture(topo, "r1", "to-r2", "ip6 and not udp port 8472") as link:
        assert _ping6(topo, "node1-p1", b).returncode == 0
    assert any(f"IP6 {a} > {b}: ICMP6, echo request" in line for line in link), link


def test_ipv6_only_underlay_native_bgp_and_tunnel(lab_up: Callable[..., Topology]) -> None:
    """No IPv4 anywhere (examples/ipv6-only.yaml): etcd, the agents, BGP and the pods all run over
    IPv6; the routers learn the pod CIDRs from the nodes' IPv6 sessions; IPv6 to the world leaves
    as the node's address; then the same underlay in tunnel mode carries the pods in IPv6 VXLAN."""
    topo = lab_up(load_topology("ipv6-only"))
    ips = _only_v6(topo)
    for host in ("node1", "r1", "cp", "world"):
        assert "inet " not in sh(topo, host, "ip", "-4", "addr", "show", "scope", "global"), host
    status = cl.agent_request(topo.name, "node1", {"op": "status"})
    assert status["kvstore"]["endpoints"][0].startswith("https://[fd00:2::"), status["kvstore"]
    assert [(p["peerAddress"], p["state"]) for p in status["bgp"]["peers"]] == [("fd00:2::1", "established")]
    assert "via fd00:0:12::2 dev to-r2 proto bird" in sh(topo, "r1", "ip", "-6", "route")
    _native_v6_across_routers(topo, ips)
    report = podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")
    assert report["ok"] and len(report["results"]) >= 8, report

    # the live switch to VXLAN over the same IPv6-only underlay
    res = config_set(topo.name, "routingMode=tunnel")  # BGP keeps running: it needs a restart to stop
    assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: "podnet_vxlan" in sh(topo, "node1", "ip", "link"), "node1's VXLAN device", 20)
    assert "local fd00:2::2 " in sh(topo, "node1", "ip", "-d", "link", "show", "podnet_vxlan")
    _reach6(topo, ips)
    with capture(topo, "r1", "to-r2", "udp port 8472") as outer:
        assert (
            _ping6(topo, "node1-p1", ips["node2-p1"][1], "-M", "do", "-s", "1382").returncode == 0
        )  # 1382 + 48 = 1430
    assert any(" IP6 fd00:2::2." in line and "> fd00:3::2.8472" in line for line in outer), outer
