"""BPF host routing's pure plan: IPv4 pod addresses with their veths and the cluster's IPv4 CIDRs."""

from __future__ import annotations

import ipaddress

from podnet.config import load_config
from podnet.datapath.guard import EndpointSource
from podnet.datapath.hostrouting import plan_host_routing


def test_plan_keeps_ipv4_only_sorted_and_unique() -> None:
    v4, v6 = ipaddress.ip_address("10.244.1.2"), ipaddress.ip_address("fd00::2")
    sources = [
        EndpointSource("lxcb", (v4, v6)),
        EndpointSource("lxca", (ipaddress.ip_address("10.244.1.3"),)),
    ]
    cidrs = [
        ipaddress.ip_network(c) for c in ("10.244.2.0/24", "fd00::/64", "10.244.1.0/24", "10.244.2.0/24")
    ]
    plan = plan_host_routing(sources, cidrs)
    assert plan.endpoints == ((v4, "lxcb"), (ipaddress.ip_address("10.244.1.3"), "lxca"))
    assert [str(c) for c in plan.cluster] == ["10.244.1.0/24", "10.244.2.0/24"]


def test_cilium_setting_names() -> None:
    assert load_config({}).bpf_host_legacy_routing is True  # Legacy unless asked
    assert load_config({"bpf": {"hostLegacyRouting": False}}).bpf_host_legacy_routing is False
    assert load_config({"enable-host-legacy-routing": "false"}).bpf_host_legacy_routing is False
