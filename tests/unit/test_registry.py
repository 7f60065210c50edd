"""The registries: names come from the specs, every spec has its implementation, one routing mode
per config, clear errors; validating a config loads no implementation; a plugin adds a protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from podnet.config import ConfigError, load_config
from podnet.datapath.modes import mode_for
from podnet.datapath.tunnels import all_protocols
from podnet.ipam.base import UnsupportedIPAMMode, factory_for
from podnet.registry import IPAM_MODES, ROUTING_MODES, TUNNEL_PROTOCOLS, Registry, UnknownChoice
from podnet.specs import tunnel as tunnel_spec

PLUGINS = Path(__file__).parents[1] / "plugins"

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
    reg: Registry[Any] = Registry("thing", "thing", "podnet.registry", "podnet.registry")
    first = object()
    reg.register("a", first)
    reg.register("a", first)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", object())
    reg.describe("a", first)
    with pytest.raises(ValueError, match="described twice"):
        reg.describe("a", object())


def test_a_spec_without_an_implementation_is_named() -> None:
    reg: Registry[Any] = Registry("thing", "thing", "podnet.registry", "podnet.registry")
    reg.describe("half", object())
    assert reg.names() == ("half",)
    with pytest.raises(LookupError, match="'half' is described but nothing implements it"):
        reg.get("half")


@pytest.mark.parametrize("registry", [ROUTING_MODES, TUNNEL_PROTOCOLS, IPAM_MODES], ids=lambda r: r.what)
def test_every_spec_has_its_implementation_and_no_more(registry: Registry[Any]) -> None:
    for name in registry.names():
        registry.get(name)
    assert sorted(registry._items) == list(registry.names())


def test_ipam_specs_say_what_the_agent_needs_of_each_mode() -> None:
    """The agent asks the spec (its phase while waiting, a static CIDR, the underlay's own
    addresses, a component of its own) instead of naming modes; each component resolves."""
    import importlib

    for spec in IPAM_MODES.specs():
        assert spec.waiting and spec.summary
        if spec.agent_component:
            module, _, name = spec.agent_component.partition(":")
            component = getattr(importlib.import_module(module), name)
            assert callable(component) and hasattr(component, "status")
    assert {s.name for s in IPAM_MODES.specs() if s.static_cidrs} == {"cluster-pool", "kubernetes"}
    assert {s.name for s in IPAM_MODES.specs() if s.underlay_addresses} == {"eni"}


def test_tunnel_implementations_take_their_facts_from_their_spec() -> None:
    for protocol in all_protocols():
        spec = tunnel_spec.spec(protocol.name)
        assert protocol.spec is spec
        assert (protocol.display, protocol.default_port, protocol.wire_ports) == (
            spec.display,
            spec.default_port,
            spec.wire_ports,
        )
        assert protocol.overhead(4) == spec.overhead(4) == 50
        assert protocol.overhead(6) == spec.overhead(6) == 70
    assert tunnel_spec.guard_ports() == (4789, 6081, 8472)
    assert tunnel_spec.inner_offsets() == (30,)
    assert tunnel_spec.label("geneve", 7000) == "Geneve (UDP 7000)"
    assert tunnel_spec.label("nosuch", 9) == "nosuch (UDP 9)"


def _python(code: str, **env: str) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "PODNET_PLUGINS"}, **env},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_validating_a_config_loads_no_implementation() -> None:
    """``load_config`` with every registry consulted (a tunnel, a routing mode, an IPAM mode)
    imports no datapath, IPAM, datastore or kernel code, and not pyroute2."""
    found = _python(
        "import json, sys\n"
        "from podnet.config import load_config\n"
        "load_config({'nodeName': 'n', 'tunnelProtocol': 'geneve', 'routingMode': 'tunnel',"
        " 'ipam': {'mode': 'multi-pool'}})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('podnet', 'pyroute2')))))"
    )
    heavy = [
        m
        for m in found
        if m.startswith(("podnet.datapath", "podnet.ipam", "podnet.store", "podnet.kube", "pyroute2"))
    ]
    assert heavy == [], heavy
    assert len(found) < 22, found  # config, specs, registry, model: the modes' settings are config too


def test_a_plugin_adds_a_tunnel_protocol_everywhere() -> None:
    """PODNET_PLUGINS: config accepts the plugin's protocol and fills its port, the pod guard
    closes that port, status labels it, and the tunnel mode plans with its device."""
    code = (
        "import json\n"
        "from podnet.config import load_config\n"
        "from podnet.datapath.modes import mode_for\n"
        "from podnet.specs import tunnel\n"
        "cfg = load_config({'nodeName': 'n', 'tunnelProtocol': 'dummyvx'})\n"
        "protocol = mode_for(cfg).tunnel(cfg)\n"
        "print(json.dumps([cfg.tunnel_port, list(tunnel.guard_ports()), tunnel.label('dummyvx', 4790),"
        " protocol.device, protocol.overhead(4)]))"
    )
    found = _python(code, PODNET_PLUGINS="podnet_dummytunnel", PYTHONPATH=str(PLUGINS))
    assert found == [4790, [4789, 4790, 6081, 8472], "DummyVX (UDP 4790)", "podnet_dvx", 50]


def test_a_plugin_that_cannot_be_imported_is_named() -> None:
    res = subprocess.run(
        [sys.executable, "-c", "from podnet.config import load_config; load_config({'nodeName': 'n'})"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PODNET_PLUGINS": "no_such_plugin_module"},
    )
    assert res.returncode != 0
    assert "PODNET_PLUGINS: cannot import plugin 'no_such_plugin_module'" in res.stderr


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
