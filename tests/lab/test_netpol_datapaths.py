"""NetworkPolicy in the datapaths the test_netpol_*.py worlds do not run (issue 28: "no mode lets a denied
packet in"): Geneve in eBPF with BPF and with Legacy host routing, hybrid routing (native on the
L2 rack, tunnel across the router), native L2 routing with Legacy host routing, VXLAN with BPF
host routing, and IPv6 only (VXLAN over an IPv6 underlay). Each datapath is one lab (datastore
etcd, policies by ``podnet policy apply``) with a server pod x-a on node1 and, on every node, an
allowed client y-c<n> and another pod y-o<n>, all serving TCP and UDP on 80 and 81. One policy set
isolates x-a both ways: ingress only from clients on 80, egress only to 81. Before it every probe
passes (a refused probe is the policy's doing); under it each probe, same node and across nodes,
TCP and UDP, must give its verdict, and tcpdump on the destination pods' eth0 must see every
allowed request arrive and no denied one. Each node's status must name the datapath (``routing``,
``hostRouting.mode``, each peer's reach), so that no test runs silently in another mode."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from labhelpers import capture, podnet_json
from netpolhelpers import World, apply, probe_all, start_servers, stop_servers
from policycases import pol
from policyoracle import allowed as oracle

from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.lab.topomodel import Pod

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: with the NetworkPolicy tier (README)


@dataclasses.dataclass(frozen=True)
class Datapath:
    source: str  # examples/<source>.yaml: its nodes, networks and routers (its pods are replaced)
    overrides: tuple[str, ...]
    host_routing: str  # the hostRouting.mode every node must report
    routing: dict[str, Any]  # what every node's status "routing" must include
    reach: str | dict[frozenset[str], str]  # how nodes reach each other's pods (status "peers")
    families: tuple[int, ...] = (4,)  # the pods' addresses probed (6: dual stack)


ETCD = ("datastore=etcd",)  # policies by podnet policy apply: no API server to start
DUAL = ("ipv6.enabled=true",)  # probed over IPv4 and IPv6
BPF_HR, LEGACY_HR = ("bpf.hostLegacyRouting=false",), ("bpf.hostLegacyRouting=true",)
GENEVE = ("routingMode=tunnel", "tunnelProtocol=geneve")
NATIVE_L2 = ("routingMode=native", "autoDirectNodeRoutes=true")
DATAPATHS = {
    "geneve-bpf": Datapath(
        "netpol", (*ETCD, *DUAL, *GENEVE, *BPF_HR),
        "BPF", {"mode": "tunnel", "tunnelProtocol": "geneve"}, "tunnel", (4, 6),
    ),
    "geneve-legacy": Datapath(
        "netpol", (*ETCD, *DUAL, *GENEVE, *LEGACY_HR),
        "Legacy", {"mode": "tunnel", "tunnelProtocol": "geneve"}, "tunnel", (4, 6),
    ),
    # examples/mixed.yaml: node1 and node2 on rack1 (direct routes), node3 behind r1 (VXLAN fallback)
    "hybrid": Datapath(
        "mixed", (*ETCD, *BPF_HR),
        "BPF", {"mode": "native", "autoDirectNodeRoutes": True, "tunnelFallback": True},
        {frozenset({"node1", "node2"}): "direct-route", frozenset({"node1", "node3"}): "tunnel",
         frozenset({"node2", "node3"}): "tunnel"},
    ),
    "native-l2-legacy": Datapath(
        "netpol", (*ETCD, *DUAL, *NATIVE_L2, *LEGACY_HR),
        "Legacy", {"mode": "native", "autoDirectNodeRoutes": True, "tunnelFallback": False}, "direct-route",
        (4, 6),
    ),
    # examples/ipv6-only.yaml: no IPv4 anywhere, VXLAN over the IPv6 underlay
    "ipv6-only-vxlan-bpf": Datapath(
        "ipv6-only", (*ETCD, "routingMode=tunnel", "tunnelProtocol=vxlan", "bgp.enabled=false", *BPF_HR),
        "BPF", {"mode": "tunnel", "tunnelProtocol": "vxlan", "underlayProtocol": "ipv6"}, "tunnel", (6,),
    ),
    "vxlan-bpf": Datapath(
        "netpol", (*ETCD, "routingMode=tunnel", "tunnelProtocol=vxlan", *BPF_HR),
        "BPF", {"mode": "tunnel", "tunnelProtocol": "vxlan"}, "tunnel",
    ),
}  # fmt: skip

SERVER = "x-a"
PORTS_OF = ({"protocol": "TCP", "port": 80}, {"protocol": "UDP", "port": 80})
POLICIES = [
    pol("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}),
    pol("clients-80", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                      "podSelector": {"matchLabels": {"role": "client"}}}],
            "ports": list(PORTS_OF),
        }],
    }),
    pol("out-81", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"protocol": "TCP", "port": 81}, {"protocol": "UDP", "port": 81}]}],
    }),
]  # fmt: skip


def _pods(nodes: list[str]) -> tuple[Pod, ...]:
    """x-a on the first node; a client y-c<n> and another pod y-o<n> on node n."""
    pods = [Pod(SERVER, nodes[0], labels={"pod": "a"}, namespace="x")]
    for i, node in enumerate(nodes, 1):
        pods.append(Pod(f"y-c{i}", node, labels={"role": "client"}, namespace="y"))
        pods.append(Pod(f"y-o{i}", node, labels={"role": "other"}, namespace="y"))
    return tuple(pods)


def _expected(nodes: list[str]) -> list[tuple[str, str, int, bool]]:
    """(source, destination, port, allowed), each probed over TCP and UDP; pods of node n end in n,
    so every row is checked on the server's node and across nodes."""
    rows = []
    for n in range(1, len(nodes) + 1):
        rows += [
            (f"y-c{n}", SERVER, 80, True),  # the allowed peer and port; the reply leaves x-a (egress)
            (f"y-c{n}", SERVER, 81, False),  # the allowed peer, another port
            (f"y-o{n}", SERVER, 80, False),  # not a peer
            (SERVER, f"y-o{n}", 80, False),  # x-a's egress denied
            (SERVER, f"y-o{n}", 81, True),  # x-a's egress allowed; the reply enters x-a (ingress)
            (f"y-o{n}", f"y-c{n % len(nodes) + 1}", 80, True),  # pods no policy isolates
        ]
    return rows


@pytest.fixture(scope="module", params=sorted(DATAPATHS))
def worlds(request: pytest.FixtureRequest) -> Iterator[list[World]]:
    """The lab of one datapath, as one World per address family probed (the same pods and servers)."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    path = DATAPATHS[request.param]
    base = load_topology(path.source)
    topo = dataclasses.replace(
        apply_overrides(base, list(path.overrides)),
        name=f"t{secrets.token_hex(2)}-npdp",
        pods=_pods([h.name for h in base.nodes]),
        namespaces=load_topology("netpol").namespaces,  # x, y, z with label ns=<name>
    )
    servers: list[subprocess.Popen[bytes]] = []
    try:
        bring_up(topo)
        state = st.LabState.load(topo.name)
        assert state is not None
        servers += start_servers(topo.name, [p.name for p in topo.pods])
        ns_labels = {n.name: dict(n.labels) for n in topo.namespaces}
        yield [World(topo, _pod_docs(topo, state, family), ns_labels, servers, family, request.param)
               for family in path.families]  # fmt: skip
    finally:
        stop_servers(servers)
        bring_down(topo.name)


def _pod_docs(topo: Topology, state: st.LabState, family: int) -> list[dict[str, Any]]:
    """The pods as the oracle and netpolhelpers.probe_all see them, with their ``family`` address."""
    docs = []
    for p in topo.pods:
        ips = [a for a in state.info["podIPs"][p.name]["ips"] if ipaddress.ip_address(a).version == family]
        assert ips, f"{p.name} has no IPv{family} address: {state.info['podIPs'][p.name]}"
        docs.append({"host": p.name, "namespace": p.namespace, "name": p.name, "labels": dict(p.labels),
                     "ip": ips[0], "namedPorts": {}})  # fmt: skip
    return docs


def test_no_datapath_lets_a_denied_packet_in(worlds: list[World]) -> None:
    w0 = worlds[0]
    nodes = [h.name for h in w0.topo.nodes]
    _assert_datapath(w0, DATAPATHS[w0.kind], nodes)
    rows = _expected(nodes)
    probes = {w.family: _probes(w, rows) for w in worlds}
    for w in worlds:
        before = _probe(w, dict.fromkeys(probes[w.family], True))
        assert all(before.values()), f"without a policy these fail: {_names(w, before, False)}"

    apply(w0, POLICIES, tuple(nodes))
    with contextlib.ExitStack() as stack:  # on the destinations of denied requests
        seen = {
            pod: stack.enter_context(capture(w0.topo, pod, "eth0", _REQUESTS))
            for pod in sorted({dst for _, dst, _, ok in rows if not ok})
        }
        got = {w.family: _probe(w, probes[w.family]) for w in worlds}
    for w in worlds:
        _verdicts(w, probes[w.family], got[w.family], seen)


def _probes(w: World, rows: list[tuple[str, str, int, bool]]) -> dict[tuple[int, int, str, int], bool]:
    """The rows as netpolhelpers' probe keys over TCP and UDP, each checked against the oracle
    (the table says what the API says)."""
    index = {p["name"]: i for i, p in enumerate(w.pods)}
    probes = {(index[s], index[d], proto, port): ok for s, d, port, ok in rows for proto in ("TCP", "UDP")}
    for (i, j, proto, port), ok in probes.items():
        src, dst = w.pods[i], w.pods[j]
        assert oracle(POLICIES, src, dst, proto, port, w.ns_labels) == ok, (src["name"], dst["name"], port)
    return probes


def _probe(w: World, want: dict[tuple[int, int, str, int], bool]) -> dict[tuple[int, int, str, int], bool]:
    """The probes; one whose verdict is not ``want``'s is probed once more (as netpolhelpers.check)."""
    got = probe_all(w, list(want))
    again = [k for k, ok in got.items() if ok != want[k]]
    if again:
        got.update(probe_all(w, again))
    return got


def _verdicts(
    w: World, want: dict[tuple[int, int, str, int], bool], got: dict[tuple[int, int, str, int], bool],
    seen: dict[str, list[str]],
) -> None:  # fmt: skip
    """Every probe gives its verdict, and tcpdump on the captured pods' eth0 saw each allowed
    request arrive and no denied one (a denied UDP datagram whose echo alone was dropped would
    pass the probe: the capture tells)."""
    wrong = [k for k, ok in want.items() if got[k] != ok]
    verdict = {True: "allow", False: "deny"}
    assert not wrong, f"IPv{w.family}:\n" + "\n".join(
        f"{_name(w, k)}: the datapath says {verdict[got[k]]}, the policy {verdict[want[k]]}" for k in wrong
    )
    captured = {k: seen[w.pods[k[1]]["name"]] for k in want if w.pods[k[1]]["name"] in seen}
    let_in = [_name(w, k) for k, lines in captured.items() if not want[k] and _arrived(w, lines, k)]
    assert not let_in, f"IPv{w.family}: denied requests reached the destination pod: {let_in}"
    lost = [_name(w, k) for k, lines in captured.items() if want[k] and not _arrived(w, lines, k)]
    assert not lost, f"IPv{w.family}: tcpdump missed allowed requests (the capture is blind): {lost}"


# what clients send to the servers (libpcap's tcp[tcpflags] reads IPv4 headers only: _arrived looks
# for the SYN)
_REQUESTS = "dst port 80 or dst port 81"


def _arrived(w: World, lines: list[str], key: tuple[int, int, str, int]) -> bool:
    """tcpdump (``-nn``) saw a request of ``key``: ``IP SRC.sport > DST.port: Flags [S]`` or ``: UDP``
    (``IP6`` for IPv6)."""
    i, j, proto, port = key
    head = f"> {w.pods[j]['ip']}.{port}: " + ("Flags [S]" if proto == "TCP" else "UDP")
    return any(f" {w.pods[i]['ip']}." in line and head in line for line in lines)


def _name(w: World, key: tuple[int, int, str, int]) -> str:
    i, j, proto, port = key
    return f"{w.pods[i]['name']} -> {w.pods[j]['name']} {proto}/{port}"


def _names(w: World, got: dict[tuple[int, int, str, int], bool], ok: bool) -> list[str]:
    return [_name(w, k) for k, v in got.items() if v == ok]


def _assert_datapath(w: World, path: Datapath, nodes: list[str]) -> None:
    """Every node's status names the datapath: host routing, routing mode, how it reaches each peer."""
    report = podnet_json("status", "--lab", w.topo.name, "-o", "json")
    for node in nodes:
        doc = report["nodes"][node]
        assert doc["hostRouting"]["mode"] == path.host_routing, (node, doc["hostRouting"])
        routing = {k: doc["routing"].get(k) for k in path.routing}
        assert routing == path.routing, (node, doc["routing"])
        reach = {p["name"]: p["plannedReach"] for p in doc["peers"] if p["agrees"]}  # the kernel's too
        want = {
            peer: path.reach if isinstance(path.reach, str) else path.reach[frozenset({node, peer})]
            for peer in nodes
            if peer != node
        }
        assert reach == want, (node, doc["peers"])
