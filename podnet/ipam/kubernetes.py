"""IPAM mode ``kubernetes`` (Cilium's "Kubernetes host scope"): the node's pod CIDRs are its Node
object's ``spec.podCIDRs``, which kube-controller-manager's node IPAM controller assigns
(``--allocate-node-cidrs --cluster-cidr``); the node hands out addresses inside them as
cluster-pool does. With ``datastore: kubernetes`` only: the datastore reads the Node
(``spec.podCIDRs``, else the ``network.podnet.io/ipv4-pod-cidr`` / Cilium's
``network.cilium.io/ipv4-pod-cidr`` annotations) and peers route to the same CIDRs.
"""

from __future__ import annotations

from podnet.ipam.base import IPAMContext, register_mode
from podnet.ipam.cluster_pool import MultiCIDRAllocator

MODE = "kubernetes"


def _factory(ctx: IPAMContext) -> MultiCIDRAllocator:
    return MultiCIDRAllocator(ctx.datastore.wait_pod_cidrs(ctx.node_name, ctx.wait_timeout))


register_mode(MODE, _factory)
