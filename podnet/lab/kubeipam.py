"""What a real cluster's other controllers or users do for IPAM, done by the lab: the stand-ins
the modes' specs name (``IpamSpec.lab_stand_in``, ``lab.cluster.StandIn``). ``NODE_IPAM_CONTROLLER``
runs kube-controller-manager's node IPAM controller (``ipam.mode: kubernetes``: it writes each
Node's ``spec.podCIDRs``); ``CRD_POOLS`` fills each node's PodnetNode ``spec.ipam.pool`` (``ipam.mode:
crd``, as an external controller would).

Design fact: the lab writes only ``spec.ipam.pool``, by server-side apply under its own field
manager (``podnet-lab``), and only for a node whose pool is still empty: a test or a user who
edits a pool later keeps the edit.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from podnet.lab import kubeapi
from podnet.lab import state as st
from podnet.lab.topology import Topology

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig

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


def _pools(cfg: AgentConfig) -> tuple[list[str], int]:
    return [str(c) for c in cfg.cluster_pool_ipv4_cidrs], cfg.cluster_pool_ipv4_mask_size


class NodeIpamController:
    """kube-controller-manager with only the node IPAM controller, over the cluster pools of the
    families the cluster runs."""

    def ensure(self, topo: Topology, state: st.LabState, cfg: AgentConfig) -> int:
        pools, mask = _pools(cfg)
        pools6 = [str(c) for c in cfg.cluster_pool_ipv6_cidrs] if cfg.enable_ipv6 else []
        return kubeapi.ensure_controller_manager(
            topo, state, pools if cfg.enable_ipv4 else [], mask, pools6, cfg.cluster_pool_ipv6_mask_size
        )


class CrdPools:
    """Each node's address pool, ``CRD_POOL_SIZE`` addresses of its own node CIDR of the cluster pool."""

    def ensure(self, topo: Topology, state: st.LabState, cfg: AgentConfig) -> int:
        return fill_crd_pools(topo, str(kubeapi.kubeconfig_path(topo.name)), *_pools(cfg))


NODE_IPAM_CONTROLLER = NodeIpamController()
CRD_POOLS = CrdPools()
