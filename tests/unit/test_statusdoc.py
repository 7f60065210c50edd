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
