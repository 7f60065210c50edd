"""Two nodes on one underlay segment: nodesetup + plan + reconcile in each, real traffic between pods.

Topology (every piece in its own test namespace):
    pod1 (10.244.1.10) -- node1 (eth0 172.16.2.2/24) ==veth== node2 (eth0 172.16.2.3/24) -- pod2 (10.244.2.10)
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute

from podnet import owned
from podnet.config import AgentConfig, load_config
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import neigh as kneigh
from podnet.datapath.kernel import route as kroute
from podnet.datapath.modes.base import LocalNode
from podnet.datapath.nodesetup import setup_node, vtep_mac_for
from podnet.datapath.objects import SCOPE_LINK, Route
from podnet.datapath.plan import paths_needed, plan
from podnet.datapath.reconcile import Reconciler, ReconcileReport
from podnet.model import NodeInfo
from podnet.util import netns as netns_util

pytestmark = pytest.mark.kernel

TUNNEL = load_config({"routingMode": "tunnel", "devices": "eth0"}, overrides={"nodeName": "node1"})
NATIVE = load_config(
    {
        "routingMode": "native",
        "autoDirectNodeRoutes": True,
        "ipv4NativeRoutingCIDR": "10.244.0.0/16",
        "devices": "eth0",
    },
    overrides={"nodeName": "node1"},
)


def node_info(n: int) -> NodeInfo:
    return NodeInfo(
        name=f"node{n}",
        ipv4=ipaddress.IPv4Address(f"172.16.2.{n + 1}"),
        vtep_mac=vtep_mac_for(f"node{n}"),
        pod_cidrs=(ipaddress.ip_network(f"10.244.{n}.0/24"),),
        router_ips=(ipaddress.ip_address(f"10.244.{n}.1"),),
    )


NODES = (node_info(1), node_info(2))


@dataclass
class Lab:
    nodes: dict[int, str]
    pods: dict[int, str]


def _add_pod(pod_ns: str, node_ns: str, n: int) -> None:
    """A stand-in for the CNI: pod eth0 10.244.n.10/32, host side lxcpodN with a /32 route."""
    with IPRoute(netns=pod_ns) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": f"lxcpod{n}", "net_ns_fd": node_ns})
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=f"10.244.{n}.10", prefixlen=32)
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst=f"10.244.{n}.1/32", oif=idx, scope=253)
        ipr.route("add", dst="0.0.0.0/0", gateway=f"10.244.{n}.1", oif=idx)
    with IPRoute(netns=node_ns) as ipr:
        idx = ipr.link_lookup(ifname=f"lxcpod{n}")[0]
        ipr.link("set", index=idx, state="up")
        # endpoint routes carry proto 201 too; the reconciler must leave them alone
        ipr.route("add", dst=f"10.244.{n}.10/32", oif=idx, proto=owned.ROUTE_PROTOCOL, scope=253)


@pytest.fixture
def lab(netns_factory: Callable[[str], str]) -> Lab:
    nodes = {1: netns_factory("node1"), 2: netns_factory("node2")}
    pods = {1: netns_factory("pod1"), 2: netns_factory("pod2")}
    with IPRoute(netns=nodes[1]) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": nodes[2]})
    for n, ns in nodes.items():
        with IPRoute(netns=ns) as ipr:
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=idx, address=f"172.16.2.{n + 1}", prefixlen=24)
            ipr.link("set", index=idx, state="up")
    for n in (1, 2):
        _add_pod(pods[n], nodes[n], n)
    return Lab(nodes=nodes, pods=pods)


def converge(lab: Lab, n: int, config: AgentConfig, setup: bool = True) -> ReconcileReport:
    """What the agent does on node n: node setup, kernel paths, plan, reconcile."""
    info = NODES[n - 1]
    with IPRoute(netns=lab.nodes[n]) as ipr:
        if setup:
            setup_node(ipr, config, info, "eth0", netns=lab.nodes[n])
        index = klink.link_index(ipr, "eth0")
        assert index is not None
        local = LocalNode(info, "eth0", index, klink.link_mtu(ipr, index))
        paths = {str(ip): kroute.route_get(ipr, ip) for ip in paths_needed(local, NODES, config)}
        return Reconciler(ipr).apply(plan(local, NODES, config, paths))


def ping(lab: Lab, src: int, dst_ip: str) -> bool:
    cmd = ["ip", "netns", "exec", lab.pods[src], "ping", "-c", "2", "-i", "0.2", "-W", "2", dst_ip]
    return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0


def captured(lab: Lab, n: int, action: Callable[[], bool]) -> tuple[bool, list[bytes]]:
    """Run ``action`` while an AF_PACKET socket inside node n records frames on its eth0."""
    with netns_util.entered(lab.nodes[n]):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        sock.bind(("eth0", 0))
        sock.setblocking(False)
        result = action()
        frames: list[bytes] = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(frames) < 1000:
            try:
                frames.append(sock.recv(65535))
            except BlockingIOError:
                time.sleep(0.02)
        return result, frames
    finally:
        sock.close()


def _ipv4(frame: bytes) -> tuple[int, str, str, bytes] | None:
    """(protocol, src, dst, payload) of an Ethernet/IPv4 frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    return proto, src, dst, frame[14 + ihl :]


def vxlan_inner(frames: list[bytes], port: int = 8472) -> list[tuple[int, str, str]]:
    """(protocol, src, dst) of the inner IPv4 packets of VXLAN frames to ``port``."""
    inner = []
    for frame in frames:
        outer = _ipv4(frame)
        if outer is None or outer[0] != 17:
            continue
        udp = outer[3]
        if struct.unpack("!H", udp[2:4])[0] != port:
            continue
        parsed = _ipv4(udp[8 + 8 :])  # UDP header, VXLAN header, then the inner Ethernet frame
        if parsed is not None:
            inner.append(parsed[:3])
    return inner


def plain_icmp(frames: list[bytes]) -> list[tuple[str, str]]:
    return [(p[1], p[2]) for p in map(_ipv4, frames) if p is not None and p[0] == 1]


def owned_routes(lab: Lab, n: int) -> set[str]:
    with IPRoute(netns=lab.nodes[n]) as ipr:
        return {r.describe() for r in kroute.dump_owned_routes(ipr)}


def test_tunnel_mode_carries_pod_traffic_over_vxlan(lab: Lab) -> None:
    for n in (1, 2):
        report = converge(lab, n, TUNNEL)
        assert report.errors == () and report.changed
    assert (
        "10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink src 10.244.1.1 mtu 1450 proto 201"
        in owned_routes(lab, 1)
    )
    ok, frames = captured(lab, 1, lambda: ping(lab, 1, "10.244.2.10"))
    assert ok, "pod1 could not ping pod2 through the tunnel"
    inner = vxlan_inner(frames)
    assert (1, "10.244.1.10", "10.244.2.10") in inner, "no VXLAN (UDP 8472) frame carried pod1's ICMP"
    assert (1, "10.244.2.10", "10.244.1.10") in inner, "pod2's reply did not come back over VXLAN"
    assert plain_icmp(frames) == [], "pod traffic leaked onto the underlay unencapsulated"


def test_reconcile_twice_changes_nothing_and_prunes_only_own_orphans(lab: Lab) -> None:
    for n in (1, 2):
        converge(lab, n, TUNNEL)
    with IPRoute(netns=lab.nodes[1]) as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.route("add", dst="10.250.0.0/24", gateway="172.16.2.3", oif=eth0, proto=owned.ROUTE_PROTOCOL)
        ipr.route("add", dst="10.251.0.0/24", gateway="172.16.2.3", oif=eth0, proto=4)
    report = converge(lab, 1, TUNNEL)
    assert [c.describe() for c in report.changes] == [
        "delete route 10.250.0.0/24 via 172.16.2.3 dev eth0 proto 201"
    ]
    again = converge(lab, 1, TUNNEL)
    assert again.changes == () and again.errors == ()
    with IPRoute(netns=lab.nodes[1]) as ipr:
        assert kroute.get_route(ipr, ipaddress.ip_network("10.251.0.0/24")) is not None, (
            "foreign route removed"
        )
        endpoint = kroute.get_route(ipr, ipaddress.ip_network("10.244.1.10/32"))
        assert endpoint is not None and endpoint.dev == "lxcpod1", "endpoint route was touched"


def test_switch_tunnel_to_native_removes_tunnel_state_and_routes_directly(lab: Lab) -> None:
    for n in (1, 2):
        converge(lab, n, TUNNEL)
    # Reconcile first while podnet_vxlan still exists: the reconciler itself must prune.
    report = converge(lab, 1, NATIVE, setup=False)
    assert report.errors == ()
    with IPRoute(netns=lab.nodes[1]) as ipr:
        vx = klink.link_index(ipr, owned.VXLAN_DEV)
        assert vx is not None
        assert kneigh.dump_neighbours(ipr, vx, owned.VXLAN_DEV) == []
        assert kneigh.dump_fdb(ipr, vx, owned.VXLAN_DEV) == []
    assert owned_routes(lab, 1) == {"10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201", _endpoint_route(1)}
    for n in (1, 2):
        assert converge(lab, n, NATIVE).errors == ()
        with IPRoute(netns=lab.nodes[n]) as ipr:
            assert klink.link_index(ipr, owned.VXLAN_DEV) is None, "podnet_vxlan left behind in native mode"
    ok, frames = captured(lab, 1, lambda: ping(lab, 1, "10.244.2.10"))
    assert ok, "pod1 could not ping pod2 over the direct route"
    assert ("10.244.1.10", "10.244.2.10") in plain_icmp(frames)
    assert vxlan_inner(frames) == []
    assert converge(lab, 1, NATIVE).changes == ()


def test_route_get_reports_a_gateway_and_native_planning_refuses_it(lab: Lab) -> None:
    with IPRoute(netns=lab.nodes[1]) as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.route("add", dst="172.16.3.0/24", gateway="172.16.2.1", oif=eth0)
        path = kroute.route_get(ipr, ipaddress.ip_address("172.16.3.2"))
        direct = kroute.route_get(ipr, ipaddress.ip_address("172.16.2.3"))
    assert path.gateway == ipaddress.ip_address("172.16.2.1") and path.dev == "eth0" and not path.direct
    assert direct.direct and direct.dev == "eth0"
    far = NodeInfo(
        name="node3",
        ipv4=ipaddress.IPv4Address("172.16.3.2"),
        pod_cidrs=(ipaddress.ip_network("10.244.3.0/24"),),
    )
    local = LocalNode(NODES[0], "eth0", eth0, 1500)
    desired = plan(local, [*NODES, far], NATIVE, {"172.16.3.2": path, "172.16.2.3": direct})
    assert [r.describe() for r in desired.routes] == ["10.244.2.0/24 via 172.16.2.3 dev eth0 proto 201"]
    (issue,) = desired.errors()
    assert issue.peer == "node3"
    assert (
        "route to destination 172.16.3.2 contains gateway 172.16.2.1, must be directly reachable"
        in issue.message
    )


def _endpoint_route(n: int) -> str:
    return Route(dst=ipaddress.ip_network(f"10.244.{n}.10/32"), dev=f"lxcpod{n}", scope=SCOPE_LINK).describe()


def test_a_route_podnet_does_not_own_is_never_overwritten(lab: Lab) -> None:
    from podnet.datapath.kernel import route as kroute

    with IPRoute(netns=lab.nodes[1]) as ipr:
        ipr.route("add", dst="10.250.0.0/24", gateway="172.16.2.3", proto=4)  # an admin's static route
        mine = Route(
            dst=ipaddress.ip_network("10.250.0.0/24"), dev="eth0", gateway=ipaddress.ip_address("172.16.2.4")
        )
        with pytest.raises(LookupError, match="is not podnet's"):
            kroute.ensure_route(ipr, mine, lambda d: ipr.link_lookup(ifname=d)[0])
        assert kroute.get_route(ipr, mine.dst).gateway == ipaddress.ip_address("172.16.2.3")  # type: ignore[union-attr]
