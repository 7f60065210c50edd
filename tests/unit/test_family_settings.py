"""ipv4.enabled / ipv6.enabled / underlayProtocol and the IPv6 pool settings: what loads, what is
refused and how the refusal names the key (issue 16)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podnet.config import ConfigError, load_config

DUAL: dict[str, Any] = {
    "nodeName": "n1",
    "ipv6": {"enabled": True},
    "ipam": {"operator": {"clusterPoolIPv6PodCIDRList": ["fd00:10:244::/56"], "clusterPoolIPv6MaskSize": 64}},
}


def test_dual_stack_and_ipv6_only_load() -> None:
    dual = load_config(DUAL)
    assert (dual.enable_ipv4, dual.enable_ipv6) == (True, True)
    assert dual.cluster_pool_ipv6_cidrs == (ipaddress.IPv6Network("fd00:10:244::/56"),)
    only6 = load_config({**DUAL, "ipv4": {"enabled": False}, "underlayProtocol": "ipv6"})
    assert (only6.enable_ipv4, only6.enable_ipv6, only6.underlay_protocol) == (False, True, "ipv6")
    assert load_config({**DUAL, "enable-ipv4": "false"}).enable_ipv4 is False  # Cilium's flag spelling


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ({"ipv4": {"enabled": False}, "ipv6": {"enabled": False}}, "ipv4.enabled", "without addresses"),
        ({"ipv6": {"enabled": False}, "underlayProtocol": "ipv6"}, "underlayProtocol", "needs ipv6.enabled"),
        ({"underlayProtocol": "ipv5"}, "underlayProtocol", "ipv4"),
        ({"underlayProtocol": "ipv6", "tunnelProtocol": "geneve"}, "tunnelProtocol", "IPv4 underlay only"),
        ({"routingMode": "native", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}, "ipv6NativeRoutingCIDR",
         "must be set"),
        ({"ipam": {"operator": {"clusterPoolIPv6PodCIDRList": ["fd00::/120"],
                                "clusterPoolIPv6MaskSize": 112}}}, "clusterPoolIPv6MaskSize", "does not fit"),
    ],
)  # fmt: skip
def test_refused_family_combinations_name_the_key(extra: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config({**DUAL, **extra})
    assert key in str(exc.value) and words in str(exc.value), str(exc.value)
