"""The typed status documents: ``to_json`` writes the keys ``-o json`` readers know, ``from_json``
reads back what ``to_json`` wrote and tolerates what older agents sent."""

from __future__ import annotations

from podnet.statusdoc.datastore import DISABLED, ETCD, KUBERNETES, StoreHealth

ETCD_KEYS = {
    "state",
    "version",
    "lastSuccess",
    "failingSince",
    "error",
    "endpoints",
    "active",
    "connected",
    "tls",
}
BGP_KEYS = "enabled speaker pid running restarts localASN routerID advertised peers error"
SESSION_KEYS = (
    "peerAddress peerASN holdTime keepaliveTime password ttlSecurity gracefulRestart state uptime family "
    "sent received receivedPrefixes"
)
KUBE_KEYS = {"state", "version", "lastSuccess", "failingSince", "error"}


def test_each_line_keeps_its_keys_and_reads_back() -> None:
    etcd = StoreHealth(
        ETCD, "unreachable", "3.4.23", 990.0, 995.0, "refused", ("http://a:2379",), "http://a:2379", True
    )
    kube = StoreHealth(KUBERNETES, "ok", "v1.20.2", 1000.0)
    assert set(etcd.to_json()) == ETCD_KEYS and etcd.to_json()["connected"] is False
    assert set(kube.to_json()) == KUBE_KEYS
    assert StoreHealth.disabled().to_json() == {"state": DISABLED}
    for health in (etcd, kube, StoreHealth.disabled()):
        assert StoreHealth.from_json(health.to_json(), health.kind) == health


def test_older_and_partial_documents_are_read() -> None:
    # an agent before its first probe answered: endpoints and "connected" only
    early = StoreHealth.from_json({"endpoints": ["http://a:2379"], "connected": True}, ETCD)
    assert early.ok and early.endpoints == ("http://a:2379",)
    assert StoreHealth.from_json({"connected": False}, ETCD).unreachable
    assert StoreHealth.from_json(None, KUBERNETES).kind == DISABLED  # a line the agent does not send
    odd = StoreHealth.from_json({"state": "ok", "lastSuccess": "soon", "version": None}, KUBERNETES)
    assert odd.last_success is None and odd.version is None


def test_the_bgp_section_keeps_its_keys_and_reads_back() -> None:
    from podnet.statusdoc.bgp import BgpSession, BgpStatus

    up = BgpSession(
        "172.16.0.1",
        64512,
        "established",
        90,
        30,
        None,
        False,
        True,
        120,
        12.5,
        "ipv4",
        1,
        ("10.244.2.0/24",),
    )
    idle = BgpSession("fd00::1", 64512, "active", family="ipv6")
    status = BgpStatus(True, "exabgp", 42, True, 0, 64513, "10.0.0.1", ("10.244.1.0/24",), (up, idle))
    doc = status.to_json()
    assert set(doc) == set(BGP_KEYS.split())
    assert set(doc["peers"][0]) == set(SESSION_KEYS.split())
    assert doc["peers"][0]["received"] == 1
    assert BgpStatus.from_json(doc) == status
    assert status.down() == [idle]
    assert BgpStatus.from_json(None) == BgpStatus() and BgpStatus().to_json() == {
        "enabled": False,
        "peers": [],
    }
