"""IPAM modes' specs: the ``ipam.mode`` values podnet serves (implementations: ``podnet.ipam``)."""

from __future__ import annotations

from dataclasses import dataclass

from podnet.registry import IPAM_MODES


@dataclass(frozen=True)
class IpamSpec:
    name: str  # the ipam.mode value
    summary: str  # one line for `podnet ipam` and the docs' table


for _spec, _default in (
    (IpamSpec("cluster-pool", "the operator carves per-node CIDRs from clusterPoolIPv4PodCIDRList"), True),
    (IpamSpec("kubernetes", "the node's spec.podCIDRs, as kube-controller-manager assigns them"), False),
    (IpamSpec("crd", "addresses listed on the node's PodnetNode resource"), False),
    (IpamSpec("multi-pool", "several named pools; the operator hands out CIDRs per pool on demand"), False),
    (IpamSpec("eni", "VPC addresses on extra interfaces, from the EC2 API"), False),
):
    IPAM_MODES.describe(_spec.name, _spec, default=_default)
