"""The operator the lab starts for each built-in IPAM mode: its argv and environment, pinned (the
modes contribute their own flags; this keeps what the lab runs identical)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from podnet.lab import cluster
from podnet.lab.cloud import CREDENTIALS
from podnet.lab.overrides import apply_overrides
from podnet.lab.topology import load_topology

POOLS = json.dumps({"blue": {"ipv4": {"cidrs": ["10.250.0.0/16"], "maskSize": 26}}})


class _State:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def process(self, name: str) -> None:
        return None

    def add_process(self, rec: Any) -> None:
        self.records.append(rec)


def _operator(monkeypatch: pytest.MonkeyPatch, example: str, sets: list[str]) -> tuple[list[str], Any]:
    """The argv (program as ``podnet``) and environment ``ensure_operator`` spawns with."""
    topo = apply_overrides(load_topology(example), sets)
    topo = dataclasses.replace(topo, name="argvtest")
    spawned: list[tuple[list[str], Any]] = []

    class _Proc:
        pid = 4242

    def spawn(argv: list[str], ns: str, log: Path, env: Any = None) -> _Proc:
        spawned.append((list(argv), env))
        return _Proc()

    monkeypatch.setattr(cluster, "spawn", spawn)
    real_tls = cluster.client_tls
    monkeypatch.setattr(cluster, "client_tls", lambda topo, who, make=True: real_tls(topo, who, make=False))
    assert cluster.ensure_operator(topo, _State()) == 1  # type: ignore[arg-type]
    ((argv, env),) = spawned
    return ["podnet", *argv[1:]], env


CASES = {
    "cluster-pool": ("two-subnets", []),
    "cluster-pool-kube": ("two-subnets", ["datastore=kubernetes"]),
    "dual-stack": ("dual-stack", []),
    "ipv6-only": ("ipv6-only", []),
    "multi-pool": ("l2", ["ipam.mode=multi-pool"]),
    "multi-pool-pools": ("l2", ["ipam.mode=multi-pool", f"ipam.operator.autoCreatePodIPPools={POOLS}"]),
    "multi-pool-kube": ("l2", ["datastore=kubernetes", "ipam.mode=multi-pool"]),
    "eni": ("eni", []),
    "eni-kube": ("eni", ["datastore=kubernetes"]),
    "eni-release": ("eni", ["eni.awsReleaseExcessIPs=false", "eni.excessIPReleaseDelay=30s"]),
}
# What ensure_operator spawned before the modes contributed their own flags (kept identical).
WANT = {
    "cluster-pool": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --etcd-endpoints https://172.16.2.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        None,
    ),
    "cluster-pool-kube": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --datastore kubernetes "
        "--k8s-kubeconfig-path /run/podnet/labs/argvtest/kube/podnet-operator.kubeconfig",
        None,
    ),
    "dual-stack": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --cluster-pool-ipv6-cidr fd00:10:244::/56 "
        "--cluster-pool-ipv6-mask-size 64 --etcd-endpoints https://192.168.1.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        None,
    ),
    "eni": (
        "operator --grace-period 60 --ipam eni --ec2-api-endpoint http://127.0.0.1:8773 "
        "--aws-region us-east-1 --aws-release-excess-ips --excess-ip-release-delay 10 "
        "--etcd-endpoints https://10.0.1.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        CREDENTIALS,
    ),
    "eni-kube": (
        "operator --grace-period 60 --ipam eni --ec2-api-endpoint http://127.0.0.1:8773 "
        "--aws-region us-east-1 --aws-release-excess-ips --excess-ip-release-delay 10 "
        "--datastore kubernetes "
        "--k8s-kubeconfig-path /run/podnet/labs/argvtest/kube/podnet-operator.kubeconfig",
        CREDENTIALS,
    ),
    "eni-release": (
        "operator --grace-period 60 --ipam eni --ec2-api-endpoint http://127.0.0.1:8773 "
        "--aws-region us-east-1 --no-aws-release-excess-ips --excess-ip-release-delay 30 "
        "--etcd-endpoints https://10.0.1.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        CREDENTIALS,
    ),
    "ipv6-only": (
        "operator --grace-period 60 --cluster-pool-ipv6-cidr fd00:10:244::/56 "
        "--cluster-pool-ipv6-mask-size 64 "
        "--etcd-endpoints https://[fd00:2::ffff:ffff:ffff:fffe]:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        None,
    ),
    "multi-pool": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --ipam multi-pool "
        '--auto-create-pod-ip-pools {"default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}}} '
        "--etcd-endpoints https://192.168.1.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        None,
    ),
    "multi-pool-kube": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --ipam multi-pool "
        '--auto-create-pod-ip-pools {"default": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24}}} '
        "--datastore kubernetes "
        "--k8s-kubeconfig-path /run/podnet/labs/argvtest/kube/podnet-operator.kubeconfig",
        None,
    ),
    "multi-pool-pools": (
        "operator --grace-period 60 --cluster-pool-ipv4-cidr 10.244.0.0/16 "
        "--cluster-pool-ipv4-mask-size 24 --ipam multi-pool "
        '--auto-create-pod-ip-pools {"blue": {"ipv4": {"cidrs": ["10.250.0.0/16"], "maskSize": 26}}} '
        "--etcd-endpoints https://192.168.1.254:2379 "
        "--etcd-trusted-ca-file /run/podnet/labs/argvtest/pki/ca.crt "
        "--etcd-cert-file /run/podnet/labs/argvtest/pki/client-operator.crt "
        "--etcd-key-file /run/podnet/labs/argvtest/pki/client-operator.key",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lab_operator_argv_per_mode(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Per mode and datastore, the lab runs the operator with the same flags and environment."""
    example, sets = CASES[case]
    argv, env = _operator(monkeypatch, example, sets)
    want_argv, want_env = WANT[case]
    assert " ".join(argv[1:]) == want_argv
    assert env == want_env
