"""What the lab does in place of a real cluster's own IPAM controllers, per mode (``IpamSpec.lab_stand_in``),
and what its routers accept of a mode's addresses (``IpamSpec.any_prefix_length``), pinned as they were
when ``lab/cluster.py`` and ``lab/bird.py`` named the modes: kube-controller-manager's node IPAM controller
over the cluster pools of the families enabled, the crd pools out of the IPv4 pool, every prefix
length inside the cluster pools for crd only."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from podnet.config import load_config
from podnet.lab import cluster, kubeapi, kubeipam
from podnet.lab.bird import pod_prefixes
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import load_topology


class _State:
    def process(self, name: str) -> None:
        return None


def _stand_in(monkeypatch: pytest.MonkeyPatch, example: str, sets: list[str]) -> list[tuple[str, Any]]:
    topo = dataclasses.replace(apply_overrides(load_topology(example), sets), name="standin")
    calls: list[tuple[str, Any]] = []

    def controller_manager(topo: Any, state: Any, *args: Any) -> int:
        calls.append(("kube-controller-manager", args))
        return 1

    def crd_pools(topo: Any, kubeconfig: str, *args: Any) -> int:
        calls.append(("crd pools", (kubeconfig, *args)))
        return 3

    monkeypatch.setattr(kubeapi, "ensure_controller_manager", controller_manager)
    monkeypatch.setattr(kubeipam, "fill_crd_pools", crd_pools)
    monkeypatch.setattr(cluster, "spawn", lambda *a, **k: pytest.fail(f"no operator for {sets}: {a}"))
    changes = cluster.ensure_operator(topo, _State())  # type: ignore[arg-type]
    assert changes == {"kube-controller-manager": 1, "crd pools": 3}[calls[0][0]]  # what they said
    return calls


@pytest.mark.parametrize(
    ("example", "sets", "want"),
    [
        ("l2", ["datastore=kubernetes", "ipam.mode=kubernetes"], (["10.244.0.0/16"], 24, [], 120)),
        (
            "dual-stack",
            ["datastore=kubernetes", "ipam.mode=kubernetes"],
            (["10.244.0.0/16"], 24, ["fd00:10:244::/56"], 64),
        ),
    ],
    ids=["ipv4", "dual-stack"],
)
def test_ipam_mode_kubernetes_runs_the_node_ipam_controller(
    monkeypatch: pytest.MonkeyPatch, example: str, sets: list[str], want: tuple[Any, ...]
) -> None:
    assert _stand_in(monkeypatch, example, sets) == [("kube-controller-manager", want)]


def test_ipam_mode_crd_fills_the_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _stand_in(monkeypatch, "l2", ["datastore=kubernetes", "ipam.mode=crd"])
    kubeconfig = str(kubeapi.kubeconfig_path("standin"))
    assert calls == [("crd pools", (kubeconfig, ["10.244.0.0/16"], 24))]


@pytest.mark.parametrize(
    ("mode", "longest"), [("crd", 32), ("kubernetes", 24), ("cluster-pool", 24), ("multi-pool", 24)]
)
def test_routers_accept_every_prefix_length_only_for_a_mode_listing_addresses(
    mode: str, longest: int
) -> None:
    datastore = "kubernetes" if mode in ("crd", "kubernetes") else "etcd"
    cfg = load_config({"ipam": {"mode": mode}, "datastore": datastore}, {}, None)
    pool = ipaddress.ip_network("10.0.0.0/8")  # the default cluster pool
    assert pod_prefixes(cfg)[0] == (pool, 24, longest)
