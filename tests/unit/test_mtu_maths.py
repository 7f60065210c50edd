"""Route and tunnel-device MTU per routing mode, protocol, underlay family and explicit MTU."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.config import load_config
from podnet.datapath import mtu
from podnet.datapath.modes import mode_for
from podnet.datapath.tunnels import tunnel_protocol


def cfg(**values: Any) -> Any:
    native_cidr = {"ipv4NativeRoutingCIDR": "10.244.0.0/16"} if values.get("routingMode") == "native" else {}
    return load_config({"nodeName": "n", **native_cidr, **values})


@pytest.mark.parametrize(
    ("values", "underlay_mtu", "family", "route_mtu"),
    [
        ({}, 1500, 4, 1450),
        ({}, 1500, 6, 1430),
        ({"tunnelProtocol": "geneve"}, 1500, 4, 1450),
        ({"tunnelProtocol": "geneve"}, 9000, 6, 8930),
        ({"MTU": 9000}, 1500, 4, 8950),
        ({"routingMode": "native"}, 1500, 4, 1500),
        ({"routingMode": "native", "MTU": 1400}, 1500, 4, 1400),
        ({"routingMode": "native"}, 9000, 6, 9000),
    ],
)
def test_route_mtu(values: dict[str, Any], underlay_mtu: int, family: int, route_mtu: int) -> None:
    config = cfg(**values)
    assert mtu.route_mtu(config, mode_for(config), underlay_mtu, family) == route_mtu


@pytest.mark.parametrize(
    ("values", "underlay_mtu", "device_mtu"),
    [({}, 1500, 1450), ({"MTU": 1400}, 1500, 1350), ({"MTU": 9000}, 1500, 1450)],
)
def test_tunnel_device_mtu_is_capped_by_the_kernel_limit(
    values: dict[str, Any], underlay_mtu: int, device_mtu: int
) -> None:
    config = cfg(**values)
    assert mtu.tunnel_device_mtu(config, tunnel_protocol(config.tunnel_protocol), underlay_mtu) == device_mtu


def test_too_small_underlay_is_refused() -> None:
    with pytest.raises(mtu.MtuError, match="route MTU 550"):
        mtu.route_mtu(cfg(), mode_for(cfg()), 600)


@pytest.mark.parametrize("name", ["vxlan", "geneve"])
def test_overhead_table(name: str) -> None:
    protocol = tunnel_protocol(name)
    assert (protocol.overhead(4), protocol.overhead(6)) == (50, 70)
