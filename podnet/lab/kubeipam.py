"""What a real cluster's other controllers or users do for IPAM, done by the lab: for
``ipam.mode: crd`` it fills each node's PodnetNode ``spec.ipam.pool`` (as an external controller
would).

Design fact: the lab writes only ``spec.ipam.pool``, by server-side apply under its own field
manager (``podnet-lab``), and only for a node whose pool is still empty: a test or a user who
edits a pool later keeps the edit.
"""

from __future__ import annotations

import ipaddress

from podnet.lab.topology import Topology

LAB_MANAGER = "podnet-lab"
CRD_POOL_SIZE = 16  # addresses per node (one becomes the node's router IP)


def crd_pool(cluster_pools: list[str], mask: int, index: int, size: int = CRD_POOL_SIZE) -> list[str]:
    """The ``index``-th node's addresses: the first ``size`` host addresses of the ``index``-th
    /mask of the cluster pool (pure)."""
    subnets = (s for p in cluster_pools for s in ipaddress.ip_network(p).subnets(new_prefix=mask))
    for i, subnet in enumerate(subnets):
        if i == index:
            return [str(subnet.network_address + 1 + k) for k in range(min(size, subnet.num_addresses - 2))]
    raise ValueError(f"the cluster pool {', '.join(cluster_pools)} has no /{mask} number {index}")


def fill_crd_pools(topo: Topology, kubeconfig: str, cluster_pools: list[str], mask: int) -> int:
    """Apply a pool to every node whose PodnetNode has none; returns how many were filled."""
    from lightkube.core.exceptions import ApiError
    from lightkube.models.meta_v1 import ObjectMeta

    from podnet.kube.client import connect
    from podnet.kube.resources import PodnetNode

    filled = 0
    client = connect(kubeconfig)
    try:
        for index, node in enumerate(topo.nodes):
            try:
                current = client.get(PodnetNode, node.name)
                if ((current.spec or {}).get("ipam") or {}).get("pool"):
                    continue
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
            pool: dict[str, dict[str, str]] = {ip: {} for ip in crd_pool(cluster_pools, mask, index)}
            obj = PodnetNode(metadata=ObjectMeta(name=node.name), spec={"ipam": {"pool": pool}})
            client.apply(obj, field_manager=LAB_MANAGER, force=True)
            filled += 1
    finally:
        client.close()
    return filled
