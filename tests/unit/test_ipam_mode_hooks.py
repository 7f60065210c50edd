"""What an IPAM mode brings through its spec (``IpamSpec.operator``, ``settings``, ``kube_addresses``)
and that the common code finds it there: the operator's flags and ``--config`` fill, the agent's
settings with their conflicts, what routers accept, a node's routed addresses, restart-only
settings. A dummy mode described here proves that nothing outside it needs to name it."""

from __future__ import annotations

import argparse
import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from podnet.agent import reconfig
from podnet.config import ConfigError, load_config
from podnet.config import agent as config_agent
from podnet.config.modesettings import ModeSettings, Setting
from podnet.config.values import as_int
from podnet.kube import convert
from podnet.lab.bird import pod_prefixes
from podnet.operator.cli import apply_config, build_parser
from podnet.operator.serving import operator_modes
from podnet.registry import IPAM_MODES
from podnet.specs.ipam import IpamSpec

NAME = "dummy-op"
RUNS: list[argparse.Namespace] = []


class DummyOperator:
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dummy-size", type=int, default=1, help="dummy-op: addresses per node")

    def config_argv(self, cfg: Any) -> list[str]:
        return ["--ipam", NAME, "--dummy-size", str(cfg.setting("dummy_size"))]

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        RUNS.append(args)
        return 0


def _size(key: str, value: Any) -> int:
    return as_int(key, value, 1, 64)


def _conflicts(cfg: Any) -> list[tuple[str, str]]:
    if cfg.datastore != "etcd":
        return [("datastore", f"{cfg.datastore} cannot be used with ipam.mode={NAME}; use etcd")]
    return []


def _prefixes(cfg: Any, family: str, mask: int) -> list[tuple[Any, int, int]]:
    return [(ipaddress.ip_network("10.99.0.0/16"), 28, 28)] if family == "ipv4" else []


DUMMY_OPERATOR = DummyOperator()
SETTINGS = ModeSettings(
    {"dummy_size": Setting(("dummy.size", "dummy-size"), _size, default=2)},
    conflicts=_conflicts,
    prefixes=_prefixes,
)


def _addresses(spec: Any, status: Any) -> list[str]:
    return list((status.get("dummy") or {}).get("addresses") or [])


def _clear() -> None:
    config_agent._mode_fields.cache_clear()
    config_agent._key_index.cache_clear()
    convert._mode_addresses.cache_clear()


@pytest.fixture
def dummy_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    IPAM_MODES.specs()  # the built-in ones first
    spec = IpamSpec(
        NAME,
        "a mode with an operator, described by a test",
        operator=f"{__name__}:DUMMY_OPERATOR",
        settings=f"{__name__}:SETTINGS",
        kube_addresses=f"{__name__}:_addresses",
    )
    monkeypatch.setitem(IPAM_MODES._specs, NAME, spec)
    _clear()
    yield
    _clear()


def test_the_operator_flags_are_the_common_ones_and_every_modes_own() -> None:
    parser = build_parser()
    flags = {f for action in parser._actions for f in action.option_strings}
    assert {"--cluster-pool-ipv4-cidr", "--auto-create-pod-ip-pools", "--aws-region"} <= flags
    ipam = next(a for a in parser._actions if "--ipam" in a.option_strings)
    assert list(ipam.choices or ()) == sorted(s.name for s in IPAM_MODES.specs() if s.operator)
    assert ipam.default == "cluster-pool"
    assert sorted(operator_modes()) == ["cluster-pool", "eni", "multi-pool"]


def test_a_described_mode_brings_its_operator_flags_and_their_config(dummy_mode: None) -> None:
    from podnet.operator.cli import main

    args = build_parser().parse_args(["--ipam", NAME, "--dummy-size", "3"])
    assert (args.ipam, args.dummy_size) == (NAME, 3)
    cfg = load_config({"ipam": {"mode": NAME}, "dummy": {"size": 5}}, {}, None)
    argv = ["--config", "x"]
    args = build_parser().parse_args(argv)
    apply_config(args, argv, cfg)
    assert (args.ipam, args.dummy_size) == (NAME, 5)
    argv = ["--config", "x", "--dummy-size=7"]  # a flag given wins over the file
    args = build_parser().parse_args(argv)
    apply_config(args, argv, cfg)
    assert args.dummy_size == 7
    RUNS.clear()
    assert main(["--ipam", NAME, "--dummy-size", "4"]) == 0
    assert [r.dummy_size for r in RUNS] == [4]


def test_a_described_mode_brings_its_settings_and_conflicts(dummy_mode: None) -> None:
    cfg = load_config({"ipam": {"mode": NAME}, "dummy": {"size": 5}}, {}, None)
    assert cfg.setting("dummy_size") == 5 and cfg.mode_settings() == {"dummy_size": 5}
    assert load_config({"ipam": {"mode": NAME}}, {}, None).mode_settings() == {"dummy_size": 2}
    assert load_config({}, {"PODNET_DUMMY_SIZE": "9"}, None).setting("dummy_size") == 9
    with pytest.raises(ConfigError, match=r"dummy\.size: 99 .*"):
        load_config({"dummy": {"size": 99}}, {}, None)
    with pytest.raises(ConfigError, match=f"datastore: kubernetes cannot be used with ipam.mode={NAME}"):
        load_config({"ipam": {"mode": NAME}, "datastore": "kubernetes"}, {}, None)
    load_config({"datastore": "kubernetes", "dummy": {"size": 3}}, {}, None)  # another mode: no conflict
    with pytest.raises(ConfigError, match=r"did you mean 'dummy\.size'"):
        load_config({"dummy": {"sise": 3}}, {}, None)


def test_routers_accept_what_the_mode_adds(dummy_mode: None) -> None:
    cfg = load_config({"ipam": {"mode": NAME}}, {}, None)
    assert (ipaddress.ip_network("10.99.0.0/16"), 28, 28) in pod_prefixes(cfg)
    other = load_config({}, {}, None)
    assert all(str(p) != "10.99.0.0/16" for p, _, _ in pod_prefixes(other))


def test_a_nodes_routed_addresses_come_from_the_modes(dummy_mode: None) -> None:
    status = {"dummy": {"addresses": ["10.99.0.7"]}}
    record = convert.record_of("n1", {"ipam": {"podCIDRs": ["10.244.1.0/24"]}}, status)
    assert record.node.pod_cidrs == (
        ipaddress.ip_network("10.244.1.0/24"),
        ipaddress.ip_network("10.99.0.7/32"),
    )


def test_eni_status_addresses_are_routed_to_the_node() -> None:
    """The ENI reader (kube/eni.py): the ENIs' addresses and those its pods still use."""
    status = {
        "ipam": {"eni": {"used": {"10.0.8.9": {}}}},
        "eni": {"enis": {"eni-1": {"addresses": ["10.0.8.5", "10.0.8.4"]}}},
    }
    record = convert.record_of("n1", {}, status)
    assert record.node.pod_cidrs == (ipaddress.ip_network("10.0.8.4/31"), ipaddress.ip_network("10.0.8.9/32"))


def test_a_changed_mode_setting_needs_a_restart() -> None:
    old = load_config({"nodeName": "n"}, {}, None)
    new = load_config({"nodeName": "n", "ipam": {"multiPoolPreAllocation": {"default": 4}}}, {}, None)
    assert reconfig.changed(old, new) == ["multi_pool_pre_allocation"]
    refused = reconfig.refusal(old, new)
    assert refused is not None and refused[1] == ["multi_pool_pre_allocation"]
    assert "multi_pool_pre_allocation can only change with an agent restart" in refused[0]
