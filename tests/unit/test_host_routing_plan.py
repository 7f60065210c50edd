"""BPF host routing's pure plan: IPv4 pod addresses with their veths and the cluster's IPv4 CIDRs."""

from __future__ import annotations

import ipaddress

from podnet.config import load_config
from podnet.datapath.guard import EndpointSource
from podnet.datapath.hostrouting import plan_host_routing, plan_tunnel
from podnet.datapath.objects import FdbEntry


def test_plan_keeps_both_families_sorted_and_unique() -> None:
    v4, v6 = ipaddress.ip_address("10.244.1.2"), ipaddress.ip_address("fd00::2")
    sources = [
        EndpointSource("lxcb", (v4, v6)),
        EndpointSource("lxca", (ipaddress.ip_address("10.244.1.3"),)),
    ]
    cidrs = [
        ipaddress.ip_network(c) for c in ("10.244.2.0/24", "fd00::/64", "10.244.1.0/24", "10.244.2.0/24")
    ]
    plan = plan_host_routing(sources, cidrs)
    assert plan.endpoints == ((v4, "lxcb"), (ipaddress.ip_address("10.244.1.3"), "lxca"), (v6, "lxcb"))
    assert [str(c) for c in plan.cluster] == ["10.244.1.0/24", "10.244.2.0/24", "fd00::/64"]


def test_cilium_setting_names() -> None:
    assert load_config({}).bpf_host_legacy_routing is False  # BPF unless asked, as Cilium (docs/datapath.md)
    assert load_config({"bpf": {"hostLegacyRouting": True}}).bpf_host_legacy_routing is True
    assert load_config({"bpf": {"hostLegacyRouting": False}}).bpf_host_legacy_routing is False
    assert load_config({"enable-host-legacy-routing": "false"}).bpf_host_legacy_routing is False


def test_tunnel_plan_takes_the_tunnel_devices_ipv4_fdb_entries() -> None:
    local = ipaddress.IPv4Address("192.168.1.10")
    fdb = [
        FdbEntry("AA:00:00:00:00:02", ipaddress.ip_address("192.168.1.11"), "podnet_vxlan"),
        FdbEntry("aa:00:00:00:00:03", ipaddress.ip_address("fd00::13"), "podnet_vxlan"),  # IPv6 underlay
        FdbEntry("aa:00:00:00:00:04", ipaddress.ip_address("192.168.1.14"), "other"),
    ]
    tunnel = plan_tunnel("podnet_vxlan", "vxlan", local, 8472, 1, fdb)
    assert tunnel is not None and tunnel.wire == "vxlan" and tunnel.port == 8472
    assert tunnel.peers == (("aa:00:00:00:00:02", ipaddress.IPv4Address("192.168.1.11")),)
    assert plan_host_routing([], [], tunnel).tunnel == tunnel


def test_no_encapsulation_in_the_program_where_it_cannot_write_the_header() -> None:
    local = ipaddress.IPv4Address("192.168.1.10")
    assert plan_tunnel(None, None, local, 8472, 1, []) is None  # native routing
    assert plan_tunnel("podnet_vxlan", "vxlan", ipaddress.ip_address("fd00::10"), 8472, 1, []) is None
    assert plan_tunnel("podnet_vxlan", None, local, 8472, 1, []) is None  # mid-switch: not the config's
    assert plan_tunnel("podnet_x", "gre", local, 8472, 1, []) is None


def test_bpf_host_routing_falls_back_to_legacy_where_the_program_cannot_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As Cilium does: no clang and no prebuilt object (or a kernel that refuses the program) ->
    Legacy, what was attached removed, status says why; a new config tries BPF again."""
    from podnet.agent import host_routing as mod
    from podnet.datapath.bpf.build import BpfBuildError

    removed: list[object] = []

    class NoNetlink:
        def __enter__(self) -> NoNetlink:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def refuse(ipr: object, plan: object) -> list[str]:
        raise BpfBuildError("clang is not installed, and podnet's eBPF programs are compiled with it")

    monkeypatch.setattr(mod, "IPRoute", NoNetlink)
    monkeypatch.setattr(mod.hr, "apply", refuse)
    monkeypatch.setattr(mod.hr, "remove", lambda ipr: removed.append(ipr) or [])
    config = [load_config({"bpf": {"hostLegacyRouting": False}})]
    routing = mod.HostRouting(lambda: config[0], lambda: [])
    assert routing._sync([]) == [] and removed  # no error every round: Legacy, and what was there goes
    doc = routing.status()
    assert doc["mode"] == "Legacy" and "clang is not installed" in doc["fallback"], doc
    from podnet.verify.render import host_routing_line

    assert host_routing_line(doc).startswith("Legacy (BPF host routing unavailable (clang is not installed")
    config[0] = load_config({"bpf": {"hostLegacyRouting": False}})  # a reload: BPF is tried again
    assert routing._enabled()
