"""The agent's status document, section by section: ``to_json`` writes the keys ``-o json`` readers
know, ``from_json`` reads back what ``to_json`` wrote, and an older or partial document reads with
defaults. The whole document round-trips unchanged (what the agent emits is what verify reads)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podnet.statusdoc.answer import ApiError
from podnet.statusdoc.document import StatusDocument, mode_section_key
from podnet.statusdoc.drops import DropCounters, DropEvent, DropEvents
from podnet.statusdoc.endpoints import EndpointsStatus, StaleEndpoint
from podnet.statusdoc.guard import GuardedEndpoint, GuardStatus
from podnet.statusdoc.hostrouting import BpfProgram, DecapProgram, HostRoutingStats, HostRoutingStatus
from podnet.statusdoc.ipam import FailedAdd, IpamStatus, PoolUse
from podnet.statusdoc.masquerade import Masquerade6Status, MasqueradeStatus
from podnet.statusdoc.modesection import ModeSection
from podnet.statusdoc.node import NodeIdentity
from podnet.statusdoc.pathmtu import PathMtuCheck, PathMtuStatus, PodSideCheck
from podnet.statusdoc.peers import PeerPlan, PlannedRoute
from podnet.statusdoc.policy import PodPolicy, PolicyStatus
from podnet.statusdoc.routing import LastRound, MtuStatus, RoutingStatus


def keys(words: str) -> set[str]:
    return set(words.split())


def in_order(words: str) -> list[str]:
    return words.split()


NODE = NodeIdentity(
    "node1", "172.16.1.10", "fd00:1::10", "02:00:00:00:00:01", ("10.244.1.0/24",), ("10.244.1.1",), "ok",
    {"zone": "a"},
)  # fmt: skip
ROUTING = RoutingStatus(
    "tunnel", "tunnel", "vxlan", 8472, False, False, "10.244.0.0/16", None, ("IPv4",), "ipv4"
)  # fmt: skip
MASQ = MasqueradeStatus(
    True, "nftables", "ip podnet", "eth0", ("10.244.0.0/16",),
    Masquerade6Status(True, "nftables", "ip6 podnet", ("fd00:10::/104",)),
)  # fmt: skip
GUARD = GuardStatus(
    True, True, True, "inet podnet_guard", {"tunnel_foreign": 3},
    (GuardedEndpoint("lxc1", ("10.244.1.2",), 25),), ("172.16.2.10",), ("10250/tcp",),
)  # fmt: skip
ENDPOINTS = EndpointsStatus(
    True, 12, (StaleEndpoint("c1", "eth0", "/run/netns/x", ("10.244.1.5/32",)),), 300.0, 3, ("c0/eth0",), 99.5
)  # fmt: skip
POOL = PoolUse("default", 4, ("10.244.1.0/24",), 5, 254, None, None, ("10.244.0.0/16",), False)
IPAM = IpamStatus(
    "cluster-pool", ("10.244.1.0/24",), 5, 249, 254, {"c1/eth0": ("10.244.1.2",)}, (POOL,), ("10.244.1.1",)
)  # fmt: skip
PATH_MTU = PathMtuStatus(
    12.0,
    (PathMtuCheck("node2", "172.16.2.10", 1500, False, 1400, True, "path to node2 carries only 1400 bytes"),),
    {"node2": PodSideCheck("10.244.2.1", True, "", 11.0)},
)
STATS = HostRoutingStats(
    BpfProgram(7, "hostrouting.o"), ("lxc1",), ("eth0",), 2, 1, 3, 1, 1, {"redirect": 10},
    (DecapProgram("VXLAN", BpfProgram(8, "vxlan-decap.o"), "podnet_vxlan", 1, {"pass": 4}),),
)  # fmt: skip
DROPS = DropCounters(True, None, {"spoofed": 1}, {"noroute": 4}, {"noroute": 1}, 300.0, {"lxc1": 2})
FAILED = FailedAdd("default/pod-a", "c9", 100, "failed to allocate", "pool default is exhausted", 1000.0)
ENI = ModeSection("eni", {"instance": {"instanceType": "m5.large"}, "enis": []}, (("ENI", "i-1 m5.large"),))


def full_document() -> StatusDocument:
    return StatusDocument(
        ready=True,
        phase="running",
        node=NODE,
        routing=ROUTING,
        masquerade=MASQ,
        guard=GUARD,
        endpoints=ENDPOINTS,
        errors=("a config error",),
        reconciles=4,
        last_reconcile=1000.5,
        last_round=LastRound(0.001, 0.002, 3, 0),
        mtu=MtuStatus(1500, 1450, "eth0"),
        ipam=IpamStatus(**{**IPAM.__dict__, "mode": "eni"}),
        peers=(PeerPlan("node2", "tunnel", "another subnet", (), "172.16.2.10", None, ("10.244.2.0/24",)),),
        routes=(PlannedRoute("10.244.2.0/24", "podnet_vxlan", None, 1450),),
        path_mtu=PATH_MTU,
        host_routing=HostRoutingStatus("BPF", (), "", STATS),
        drops=DROPS,
        policy=PolicyStatus(True, "etcd", 2),
        mode_section=ENI,
        failed_adds=(FAILED,),
    )


SECTION_KEYS: list[tuple[Any, str]] = [
    (NODE, "name ipv4 ipv6 vtepMAC podCIDRs routerIPs health labels"),
    (
        ROUTING,
        "mode modeName tunnelProtocol tunnelPort autoDirectNodeRoutes tunnelFallback ipv4NativeRoutingCIDR "
        "ipv6NativeRoutingCIDR families underlayProtocol",
    ),
    (MtuStatus(1500, 1450, "eth0"), "device route underlayDevice bigTCP"),
    (LastRound(), "planSeconds applySeconds changes errors"),
    (MASQ, "enableIPv4Masquerade mode table device exempt ipv6"),
    (MASQ.ipv6, "enableIPv6Masquerade mode table exempt"),
    (GUARD, "enabled sourceVerification isolation table drops endpoints tunnelSources nodePorts"),
    (GUARD.endpoints[0], "hostIfname addresses spoofDrops"),
    (ENDPOINTS, "total stale gcInterval reaped lastReaped lastSweep"),
    (ENDPOINTS.stale[0], "containerID ifname netns addresses"),
    (POOL, "pool family cidrs used capacity needed error poolCIDRs exhausted"),
    (IPAM, "mode podCIDRs used free total allocations pools routerIPs"),
    (FAILED, "pod containerID code msg details at"),
    (PATH_MTU, "checked peers podSide"),
    (PATH_MTU.peers[0], "peer address required ok discovered reachable message"),
    (PATH_MTU.pod_side["node2"] if PATH_MTU.pod_side else None, "address ok detail checked"),
    (PeerPlan("node2", "tunnel"), "name reach why issues ipv4 ipv6 podCIDRs routerIPs"),
    (PlannedRoute("10.244.2.0/24"), "dst dev gateway mtu"),
    (
        HostRoutingStatus("BPF", (), "", STATS),
        "mode errors program devices underlayDevices endpoints learntMACs clusterCIDRs tunnelPeers underlay "
        "counters decap",
    ),
    (STATS.decap[0], "protocol program dev allowed counters"),
    (DROPS, "events error byReason kernel kernelRecent recentWindow endpoints"),
    (
        DropEvent(1, 1000.0, "spoofed", "lxc1", "", 4, "10.244.77.7", "10.244.2.2", "UDP", 40000, 9999),
        "seq time reason in out family src dst proto sport dport",
    ),
    (DropEvents(), "enabled events next error"),
    (
        PodPolicy("node1", PolicyStatus(True)),
        "ok node enabled source policies invalid unresolved isolatedIngress isolatedEgress entries appliedAt "
        "covered error ingressIsolatedBy egressIsolatedBy ingress egress",
    ),
    (ApiError(2, "bad request", "why"), "ok code msg details"),
]


@pytest.mark.parametrize(("section", "words"), SECTION_KEYS)
def test_each_section_keeps_its_keys_and_reads_back(section: Any, words: str) -> None:
    doc = section.to_json()
    assert set(doc) == keys(words)
    assert type(section).from_json(doc) == section


def test_the_whole_document_round_trips_with_its_keys() -> None:
    status = full_document()
    doc = status.to_json()
    assert list(doc) == [
        "ready",
        "phase",
        "node",
        "datastore",
        "kvstore",
        "kubernetes",
        "routing",
        "masquerade",
        "guard",
        "endpoints",
        "errors",
        "reconciles",
        "lastReconcile",
        "lastRound",
        "mtu",
        "ipam",
        "peers",
        "routes",
        "pathMTU",
        "bgp",
        "hostRouting",
        "drops",
        "policy",
        "eni",
        "failedAdds",
    ]
    assert doc["eni"]["rows"] == [["ENI", "i-1 m5.large"]] and doc["eni"]["enis"] == []
    assert StatusDocument.from_json(doc) == status
    assert StatusDocument.from_json(copy.deepcopy(doc)).to_json() == doc


def test_what_an_agent_sends_before_its_first_round_and_without_components() -> None:
    doc = StatusDocument().to_json()
    assert doc["masquerade"] == {"mode": "disabled"} and doc["guard"] == {"enabled": False}
    assert doc["endpoints"] == {} and doc["hostRouting"] == {"mode": "Legacy"} and doc["drops"] is None
    assert doc["pathMTU"] == {"checked": 0.0, "peers": []} and doc["kubernetes"] == {"state": "disabled"}
    assert not {"mtu", "ipam", "peers", "routes", "failedAdds"} & set(doc)
    assert StatusDocument.from_json(doc) == StatusDocument()


def test_older_and_partial_documents_are_read_with_defaults() -> None:
    old = StatusDocument.from_json(
        {
            "ready": True,
            "node": {"name": "node7"},
            "routing": {"mode": "native"},
            "ipam": {"mode": "cluster-pool", "podCIDRs": ["10.244.7.0/24"], "used": 1, "total": 254},
            "peers": [{"name": "node8", "reach": "direct-route", "podCIDRs": ["10.244.8.0/24"]}],
            "pathMTU": {"checked": 1.0, "peers": [{"peer": "node8", "ok": True}]},
            "drops": {"events": True, "byReason": {}, "kernel": {"noroute": 2}},
            "hostRouting": {"mode": "BPF", "errors": [], "program": None},
        }
    )
    assert old.name == "node7" and old.routing.mode == "native" and old.routing.tunnel_protocol is None
    assert old.ipam is not None and old.ipam.pools is None  # an agent from before pools
    assert old.peers is not None and old.peers[0].router_ips == () and old.peers[0].address(4) is None
    assert old.path_mtu.pod_side is None and old.path_mtu.failing() == []
    assert old.drops is not None and old.drops.kernel_recent is None and old.drops.recent_window == 300.0
    assert old.host_routing.bpf and old.host_routing.program is None
    assert old.mtu is None and old.mode_section is None and old.failed_adds is None
    assert StatusDocument.from_json({"error": "agent of node2 does not answer"}).unanswered
    assert StatusDocument.from_json(None) == StatusDocument()


@pytest.mark.parametrize(
    ("section", "partial"),
    [
        (MasqueradeStatus, {"mode": "disabled"}),
        (MasqueradeStatus, {"enableIPv4Masquerade": False, "mode": "disabled"}),
        (GuardStatus, {"enabled": True, "drops": None, "endpoints": [{"hostIfname": "lxc1"}, "junk"]}),
        (EndpointsStatus, {"total": 3}),
        (RoutingStatus, {"mode": "tunnel", "tunnelPort": "eight"}),
        (HostRoutingStatus, {"mode": "Legacy", "errors": ["x"], "fallback": "no clang"}),
        (PathMtuStatus, {"peers": [{"peer": "n2"}], "podSide": {"n2": {"ok": True}}}),
        (DropEvents, {"events": [{"seq": 3, "reason": "spoofed"}]}),
        (LastRound, {"changes": 2}),
    ],
)
def test_a_partial_section_reads_and_writes_back_whole(section: Any, partial: dict[str, Any]) -> None:
    read = section.from_json(partial)
    assert section.from_json(read.to_json()) == read


def test_pools_from_an_agent_before_the_exhausted_flag_take_the_errors_word() -> None:
    assert PoolUse.from_json({"pool": "x", "family": 4, "error": "pool x is exhausted"}).exhausted
    assert not PoolUse.from_json({"pool": "x", "family": 4, "error": "no PodnetIPPool 'x'"}).exhausted
    assert IpamStatus.from_json(None) is None and IpamStatus.from_json({}) is None


def test_a_failed_add_names_its_pod_either_way() -> None:
    assert FAILED.names("pod-a") and FAILED.names("default/pod-a") and not FAILED.names("pod-b")
    assert FailedAdd.from_json({"pod": "p"}).code is None


def test_the_mode_section_lives_under_the_modes_name_unless_the_document_uses_that_key() -> None:
    assert mode_section_key("eni") == "eni"
    assert mode_section_key("kubernetes") is None  # the Kubernetes line keeps its key
    assert mode_section_key("") is None
    doc = {"ipam": {"mode": "kubernetes"}, "kubernetes": {"state": "ok"}}
    assert StatusDocument.from_json(doc).mode_section is None
    older = ModeSection.from_json("eni", {"instance": {}})  # an agent from before rows
    assert older is not None and older.rows == () and older.to_json() == {"instance": {}, "rows": []}
    assert ModeSection.from_json("eni", None) is None


def test_drop_events_keep_policy_annotations_only_when_made() -> None:
    plain = DropEvent(1, 1.0, "spoofed")
    assert "direction" not in plain.to_json() and "policies" not in plain.to_json()
    policy = DropEvent(2, 1.0, "policy-denied-ingress", direction="ingress", policies=("x/deny",))
    assert DropEvent.from_json(policy.to_json()) == policy and policy.to_json()["policies"] == ["x/deny"]


def test_api_errors_are_told_from_answers() -> None:
    assert ApiError.from_json({"ok": True}) is None and ApiError.from_json({"enabled": True}) is None
    error = ApiError.from_json({"ok": False, "code": 2, "msg": "bad drops request"})
    assert error == ApiError(2, "bad drops request") and str(error) == "bad drops request"


def test_a_bare_bgp_section_with_sessions_is_on() -> None:
    from podnet.statusdoc.bgp import BgpStatus

    bare = BgpStatus.from_json({"peers": [{"peerAddress": "172.16.2.1", "peerASN": 65001}]})
    assert bare.enabled and bare.peers[0].peer_asn == 65001
    assert not BgpStatus.from_json({"enabled": False, "peers": [{"peerAddress": "x"}]}).enabled


def test_status_prints_the_modes_rows_without_knowing_the_mode() -> None:
    from podnet.verify.nodereport import NodeReport
    from podnet.verify.render import status_rows

    report = NodeReport(full_document(), routing_summary="Tunnel [vxlan]", masquerade_in_kernel=True)
    out = report.to_json()
    assert list(out) == in_order(
        "agent node kvstore kubernetes bpf hostRouting drops routing nativeRoutingCIDR masquerading6 "
        "masquerading pathMTU guard policy endpoints bgp eni mtu ipam peers"
    )
    assert out["routing"]["summary"] == "Tunnel [vxlan]" and out["nativeRoutingCIDR"] == "10.244.0.0/16"
    assert [p["peer"] for p in out["pathMTU"]] == ["node2"]  # only the failing checks
    rows = dict(status_rows(report))
    assert rows["ENI"] == "i-1 m5.large" and rows["Masquerading"].startswith("nftables [eth0]")
    assert rows["Host Routing"].startswith("BPF (hostrouting.o id 7 on 1 pod veths and eth0")
    assert NodeReport(StatusDocument(unanswered="down")).to_json() == {
        "agent": {"ready": False, "error": "down"}
    }
