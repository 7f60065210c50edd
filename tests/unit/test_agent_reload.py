"""Live reload rules of the agent: which settings a running agent adopts, which need a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.agent.daemon import Agent
from podnet.config import load_config

BASE = {
    "nodeName": "n1",
    "etcd": {"endpoints": ["http://192.0.2.1:2379"]},
    "ipv4NativeRoutingCIDR": "10.244.0.0/16",
}


def agent(tmp_path: Path) -> Agent:
    conf = tmp_path / "agent.yaml"
    conf.write_text("nodeName: n1\n")
    return Agent(load_config(BASE), config_path=conf)


@pytest.mark.parametrize(
    "change",
    [
        {"routingMode": "native", "autoDirectNodeRoutes": True},
        {"MTU": 1400},
        {"enableIPv4Masquerade": False},
        {"routingMode": "native", "tunnelFallback": True},
    ],
)
def test_live_settings_are_adopted(tmp_path: Path, change: dict[str, object]) -> None:
    a = agent(tmp_path)
    new = load_config({**BASE, **change})
    assert a.reload(new) == []
    assert a.config == new and a._dirty.is_set()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodeName": "other"}, "node_name"),
        ({"etcd": {"endpoints": ["http://192.0.2.9:2379"]}}, "etcd_endpoints"),
        ({"ipam": {"operator": {"clusterPoolIPv4MaskSize": 26}}}, "cluster_pool_ipv4_mask_size"),
    ],
)
def test_restart_only_settings_are_refused_and_nothing_changes(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    a = agent(tmp_path)
    before = a.config
    assert a.reload(load_config({**BASE, **change})) == [field]
    assert a.config is before


def test_config_file_change_is_noticed_once(tmp_path: Path) -> None:
    a = agent(tmp_path)
    assert not a._config_file.changed()
    path = a.config_path
    assert path is not None
    path.write_text("nodeName: n1\nroutingMode: tunnel\n")
    import os

    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    assert a._config_file.changed()
    assert not a._config_file.changed()
