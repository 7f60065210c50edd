"""The bgp section of the agent config: Cilium-like names, and clear errors for bad settings."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from podnet.config import ConfigError, load_config

PEER = {"peerAddress": "172.16.2.1", "peerASN": 65001}


def bgp(**section: Any) -> dict[str, Any]:
    return {"nodeName": "node1", "bgp": {"enabled": True, "localASN": 64512, "peers": [PEER], **section}}


def test_defaults_and_cilium_spellings() -> None:
    cfg = load_config(
        bgp(peers=[{"peerAddress": "172.16.2.1/32", "peerASN": 65001, "holdTimeSeconds": 30,
                    "keepAliveTimeSeconds": 10,
                    "gracefulRestart": {"enabled": True, "restartTimeSeconds": 5}}])
    )  # fmt: skip
    assert cfg.bgp_enabled and cfg.bgp_local_asn == 64512 and cfg.bgp_advertise == ("PodCIDR",)
    (peer,) = cfg.bgp_peers
    assert peer.peer_address == ipaddress.IPv4Address("172.16.2.1")
    assert (peer.hold_time, peer.keepalive_time, peer.restart_time) == (30, 10, 5)
    assert peer.graceful_restart and peer.password is None


def test_disabled_by_default_and_nothing_required() -> None:
    cfg = load_config({"nodeName": "n", "bgp": {"localASN": 64512}})
    assert not cfg.bgp_enabled and cfg.bgp_peers == ()


def test_environment_and_flags() -> None:
    cfg = load_config(
        {"nodeName": "n"},
        {"PODNET_BGP_ENABLED": "true", "PODNET_BGP_LOCAL_ASN": "64600",
         "PODNET_BGP_PEERS": '[{"peerAddress": "10.0.0.1", "peerASN": 65000}]'},
    )  # fmt: skip
    assert cfg.bgp_local_asn == 64600 and str(cfg.bgp_peers[0].peer_address) == "10.0.0.1"


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"localASN": 0}, "bgp.localASN", "not a usable AS number"),
        ({"localASN": 2**32}, "bgp.localASN", "not a usable AS number"),
        (
            {"peers": [{"peerAddress": "172.16.2.300", "peerASN": 65001}]},
            "bgp.peers[0].peerAddress",
            "not an IP address",
        ),
        (
            {"peers": [{"peerAddress": "fe80::1", "peerASN": 65001}]},
            "bgp.peers[0].peerAddress",
            "link-local",
        ),
        ({"peers": [{"peerAddress": "172.16.2.1", "peerASN": 0}]}, "bgp.peers[0].peerASN", "AS number"),
        ({"peers": [{"peerAdress": "172.16.2.1", "peerASN": 1}]}, "bgp.peers[0].peerAdress", "peerAddress"),
        ({"peers": [{"peerASN": 65001}]}, "bgp.peers[0].peerAddress", "missing"),
        ({"peers": [{**PEER, "holdTime": 2}]}, "bgp.peers[0].holdTime", "RFC 4271"),
        ({"peers": [{**PEER, "holdTime": 9, "keepaliveTime": 9}]}, "bgp.peers[0].keepaliveTime", "shorter"),
        ({"peers": [{**PEER, "gracefulRestart": "maybe"}]}, "bgp.peers[0].gracefulRestart", "true/false"),
        ({"peers": [PEER, PEER]}, "bgp.peers[1].peerAddress", "twice"),
        ({"peers": {"peerAddress": "172.16.2.1"}}, "bgp.peers.peerAddress", "unknown key"),
        ({"peers": []}, "bgp.peers", "at least one"),
        ({"localASN": None}, "bgp.localASN", "not a usable AS number"),
        ({"advertise": ["Service"]}, "bgp.advertise", "PodCIDR"),
    ],
)
def test_bad_settings_name_the_key(section: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(bgp(**section))
    assert err.value.key == key, str(err.value)
    assert words in str(err.value)


def test_enabled_without_asn_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="needs the node's AS number"):
        load_config({"nodeName": "n", "bgp": {"enabled": True, "peers": [PEER]}})


def test_password_is_masked_in_json() -> None:
    cfg = load_config(bgp(peers=[{**PEER, "password": "s3cret"}]))
    assert cfg.bgp_peers[0].password == "s3cret"
    assert cfg.bgp_peers[0].to_json()["password"] == "***"
