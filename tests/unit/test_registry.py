"""The registries: names come from the implementations, one routing mode per config, clear errors."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.config import ConfigError, load_config
from podnet.datapath.modes import mode_for
from podnet.ipam.base import UnsupportedIPAMMode, factory_for
from podnet.registry import IPAM_MODES, ROUTING_MODES, TUNNEL_PROTOCOLS, Registry, UnknownChoice

NODE = {"nodeName": "n", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}


def test_builtin_names() -> None:
    assert ROUTING_MODES.names() == ("native", "native+tunnelFallback", "tunnel")
    assert TUNNEL_PROTOCOLS.names() == ("geneve", "vxlan")
    assert IPAM_MODES.names() == ("cluster-pool", "crd", "eni", "kubernetes", "multi-pool")


def test_unknown_name_lists_the_choices_and_a_near_miss() -> None:
    near_miss = r"unknown tunnel protocol 'vxlam' \(did you mean 'vxlan'\?\).*geneve, vxlan"
    with pytest.raises(UnknownChoice, match=near_miss):
        TUNNEL_PROTOCOLS.get("vxlam")
    with pytest.raises(UnsupportedIPAMMode, match="supported modes: cluster-pool"):
        factory_for("aws-eni")


def test_a_name_registered_twice_is_refused() -> None:
    reg: Registry[Any] = Registry("thing", "thing", "podnet.registry")
    first = object()
    reg.register("a", first)
    reg.register("a", first)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", object())


@pytest.mark.parametrize(
    ("values", "mode", "tunnel"),
    [
        ({}, "tunnel", "vxlan"),
        ({"tunnelProtocol": "geneve"}, "tunnel", "geneve"),
        ({"routingMode": "native"}, "native", None),
        ({"routingMode": "native", "tunnelFallback": True}, "native+tunnelFallback", "vxlan"),
        ({"tunnel": "disabled"}, "native", None),
    ],
)
def test_exactly_one_mode_applies(values: dict[str, Any], mode: str, tunnel: str | None) -> None:
    config = load_config({**NODE, **values})
    assert [m.name for m in ROUTING_MODES if m.applies(config)] == [mode]
    protocol = mode_for(config).tunnel(config)
    assert (protocol.name if protocol else None) == tunnel


def test_config_choices_come_from_the_registries() -> None:
    with pytest.raises(ConfigError, match="native, tunnel"):
        load_config({**NODE, "routingMode": "hybrid"})
    with pytest.raises(ConfigError, match="cluster-pool, crd, eni"):
        load_config({**NODE, "ipam": {"mode": "aws-eni"}})
