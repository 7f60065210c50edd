"""Issue 11: a pod is not trusted. Every attack runs from inside a lab pod (or an outside host),
as the tests no one on the project wrote did; each was delivered before the pod guard existed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labhelpers import capture, pod_ips

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.bird import birdc
from podnet.lab.overrides import apply_overrides
from podnet.lab.pki import pki_dir
from podnet.lab.topology import Topology, load_topology

pytestmark = pytest.mark.lab

RAWSEND = str(Path(__file__).with_name("rawsend.py"))
TUNNEL = ["routingMode=tunnel", "autoDirectNodeRoutes=false"]
L2_NATIVE = ["routingMode=native", "autoDirectNodeRoutes=true", "ipv4NativeRoutingCIDR=10.244.0.0/16"]
BGP = ["routingMode=native", "bgp.enabled=true", "ipv4NativeRoutingCIDR=10.244.0.0/16"]


def _in(topo: Topology, host: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, host), *argv],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _pod_on(topo: Topology, node: str) -> str:
    return next(p.name for p in topo.pods if p.node == node)


def _guard(topo: Topology, node: str) -> dict[str, Any]:
    return dict(cl.agent_request(topo.name, node, {"op": "status"})["guard"])


def _spoof_drops(topo: Topology, node: str, pod: str) -> int:
    ip = pod_ips(topo)[pod]
    return sum(e["spoofDrops"] for e in _guard(topo, node)["endpoints"] if f"{ip}" in e["addresses"])


@pytest.mark.parametrize(
    ("example", "settings"), [("two-subnets", TUNNEL), ("l2", L2_NATIVE)], ids=["tunnel", "native"]
)
def test_spoofed_sources_are_dropped_and_counted(
    lab_up: Callable[..., Topology], example: str, settings: list[str]
) -> None:
    topo = lab_up(apply_overrides(load_topology(example), settings))
    ips = pod_ips(topo)
    src, dst = _pod_on(topo, "node1"), _pod_on(topo, "node2")
    other_pod = next((ips[p.name] for p in topo.pods if p.name not in (src, dst)), "10.244.9.9")
    unallocated = ips[src].rsplit(".", 1)[0] + ".200"
    gateway = next(h for h in topo.hosts if h.role in ("router", "controlplane")).primary.address.ip
    forged = [other_pod, unallocated, "8.8.8.8", str(topo.control_plane.primary.address.ip), str(gateway)]
    listen = [sys.executable, RAWSEND, "listen", ips[dst], "9999", "4"]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", st.ns_name(topo.name, dst), *listen], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    for source in forged:
        assert _in(topo, src, sys.executable, RAWSEND, "udp", source, ips[dst], "9999", "5").returncode == 0
    assert (
        _in(topo, src, sys.executable, RAWSEND, "udp", ips[src], ips[dst], "9999", "5").returncode == 0
    )  # legit
    received = int((listener.communicate(timeout=30)[0] or "0").strip())
    assert received == 5, (
        f"{received} datagrams arrived: spoofed ones got through (only the 5 legit ones may)"
    )
    assert _spoof_drops(topo, "node1", src) >= 5 * len(forged)


def test_hand_made_vxlan_is_not_delivered(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), TUNNEL))
    ips = pod_ips(topo)
    node2 = str(topo.host("node2").primary.address.ip)
    with capture(topo, "pod2", "eth0", "icmp and src host 10.244.1.77") as seen:
        # from a pod, to another node's VXLAN port: never leaves the pod's node
        _in(topo, "pod1", sys.executable, RAWSEND, "vxlan", node2, "10.244.1.77", ips["pod2"], "5")
        # from a host that is not a node (outside the cluster): node2 refuses it
        _in(topo, "world", sys.executable, RAWSEND, "vxlan", node2, "10.244.1.77", ips["pod2"], "5")
        time.sleep(1.0)
    assert [line for line in seen if line.strip()] == [], f"injected VXLAN reached pod2: {seen}"
    assert _guard(topo, "node1")["drops"]["pod_to_tunnel"] >= 5
    # node2 drops it: the guard's tunnel rule, or before it (BPF host routing's VXLAN decap, which
    # takes VXLAN only from the peers' underlay addresses)
    decap = cl.agent_request(topo.name, "node2", {"op": "status"})["hostRouting"].get("decap") or []
    denied = sum(d["counters"]["denied"] for d in decap)
    assert _guard(topo, "node2")["drops"]["tunnel_foreign"] + denied >= 5
    ok = _in(topo, "pod1", "ping", "-c", "2", "-W", "1", ips["pod2"])  # real tunnel traffic still flows
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize(("port", "what"), [(2379, "client"), (2380, "peer")])
def test_pods_cannot_reach_etcd(lab_up: Callable[..., Topology], port: int, what: str) -> None:
    """Neither etcd's client port nor its peer port (issue 29: mutual TLS refused a pod there, but
    the pod reached it): the guard drops the SYN and counts it under the same reason."""
    topo = lab_up(apply_overrides(load_topology("two-subnets"), TUNNEL))
    cp = str(topo.control_plane.primary.address.ip)
    probe = f"import socket; socket.create_connection(('{cp}', {port}), timeout=2)"
    before = _guard(topo, "node1")["drops"]["pod_to_control_plane"]
    res = _in(topo, "pod1", sys.executable, "-c", probe)
    assert res.returncode != 0, f"a pod opened a connection to etcd's {what} port {port}"
    assert "timed out" in res.stderr, res.stderr  # dropped on its node, not refused by etcd
    assert _guard(topo, "node1")["drops"]["pod_to_control_plane"] > before
    node = _in(topo, "node1", sys.executable, "-c", probe)  # the node itself still reaches it
    assert node.returncode == 0, node.stderr


def test_a_pods_bgp_connection_never_reaches_bird_as_the_node(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), BGP))
    r1 = "172.16.2.1"
    before = birdc(topo.name, "r1", "show", "protocols", "node_node1")
    assert "Established" in before, before
    probe = f"import socket; socket.create_connection(('{r1}', 179), timeout=2)"
    for _ in range(3):
        assert _in(topo, "pod1", sys.executable, "-c", probe).returncode != 0
    time.sleep(2)
    after = birdc(topo.name, "r1", "show", "protocols", "node_node1")
    assert "Established" in after, after
    since = lambda text: text.split("node_node1", 1)[1].split()[3]  # noqa: E731  (the "Since" column)
    assert since(after) == since(before), f"the node's session was reset: {before!r} -> {after!r}"
    assert _guard(topo, "node1")["drops"]["pod_to_bgp"] >= 3


def test_etcd_demands_a_client_certificate_and_status_says_tls(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), TUNNEL))
    cp = str(topo.control_plane.primary.address.ip)
    ca = pki_dir(topo.name) / "ca.crt"
    attempts = {
        "plain http": f"import urllib.request as u; u.urlopen('http://{cp}:2379/version', timeout=3).read()",
        "TLS without a client certificate": (
            f"import ssl, socket; c = ssl.create_default_context(cafile='{ca}'); "
            f"s = c.wrap_socket(socket.create_connection(('{cp}', 2379), timeout=3)); "
            "s.sendall(b'GET /version HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); assert s.recv(100)"
        ),
    }
    for what, code in attempts.items():  # from node1, which reaches etcd (a pod does not even get there)
        res = _in(topo, "node1", sys.executable, "-c", code)
        assert res.returncode != 0, f"etcd answered {what}: {res.stdout}"
    kv = cl.agent_request(topo.name, "node1", {"op": "status"})["kvstore"]
    assert kv["tls"] and kv["state"] == "ok" and kv["active"].startswith("https://")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("podnet")), "status", "--lab", topo.name],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "KVStore:" in out.stdout and "Ok (TLS)" in out.stdout, out.stdout + out.stderr


def test_bgp_sessions_come_up_with_ttl_security_on_both_ends(lab_up: Callable[..., Topology]) -> None:
    """GTSM (RFC 5082) on the node's ExaBGP and on the lab's BIRD: both send with TTL 255 and set
    IP_MINTTL 255 on the session, so nothing farther than one hop can take part in it."""
    topo = lab_up(apply_overrides(load_topology("two-subnets"), BGP))
    assert "Established" in birdc(topo.name, "r1", "show", "protocols", "node_node1")
    assert "ttl security on;" in (Path(st.lab_dir(topo.name)) / "bird" / "r1.conf").read_text()
    exabgp = next(Path(st.lab_dir(topo.name)).glob("nodes/node1/state/bgp/*.conf"))
    text = exabgp.read_text()
    assert "outgoing-ttl 255;" in text and "incoming-ttl 255;" in text
    assert oct(exabgp.stat().st_mode & 0o777) == "0o600"


def test_a_pod_reaches_its_node_by_icmp_and_opened_ports_only(lab_up: Callable[..., Topology]) -> None:
    topo = lab_up(apply_overrides(load_topology("two-subnets"), [*TUNNEL, "podGuard.nodePorts=[7947/tcp]"]))
    from podnet.verify.probe import tcp_probe

    node_ip = str(topo.host("node1").primary.address.ip)
    pod, node = st.ns_name(topo.name, "pod1"), st.ns_name(topo.name, "node1")
    assert _in(topo, "pod1", "ping", "-c", "1", "-W", "2", node_ip).returncode == 0
    assert not tcp_probe(pod, node, node_ip, port=7946, timeout=1.0).ok  # a service the user did not open
    assert tcp_probe(pod, node, node_ip, port=7947, timeout=2.0).ok  # podGuard.nodePorts
    assert _guard(topo, "node1")["drops"]["pod_to_node"] >= 1
    assert tcp_probe(node, pod, pod_ips(topo)["pod1"], timeout=2.0).ok  # the node still reaches its pods
