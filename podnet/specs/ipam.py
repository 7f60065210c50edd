"""IPAM modes' specs: the ``ipam.mode`` values podnet serves, and what the agent must know of each
without naming it (implementations: ``podnet.ipam``; operators: ``podnet.operator``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from podnet.registry import IPAM_MODES


def load(ref: str) -> Any:
    """The object a ``"module:name"`` reference names (imported on first use)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class IpamSpec:
    name: str  # the ipam.mode value
    summary: str  # one line for `podnet ipam` and the docs' table
    waiting: str = "waiting for pod CIDRs from the operator"  # the agent's phase until IPAM is ready
    static_cidrs: bool = False  # a node's pod CIDRs never change under its pods (status flags a change)
    underlay_addresses: bool = False  # pods get the underlay's own addresses (no overlap check)
    agent_component: str = ""  # "module:Class" the agent runs beside IPAM (built with the allocator)
    # "module:name" of its operator's command line (``operator.serving.ModeOperator``: its flags, the
    # flags its settings mean, its run); set: podnet's operator serves it (``podnet operator --ipam <name>``)
    operator: str = ""
    needs_kubernetes: str = ""  # what it reads that only the Kubernetes datastore has
    node_object_cidrs: bool = False  # a node's pod CIDRs are its Node object's spec.podCIDRs
    # "module:name" of its own settings (``config.modesettings.ModeSettings``: their keys, parsers,
    # defaults, and what they cannot run with)
    settings: str = ""
    # "module:function" (PodnetNode spec, status) -> the addresses peers route to the node beyond its
    # CIDRs, as the mode keeps them on the Kubernetes datastore
    kube_addresses: str = ""
    # "module:name" of the lab's part in running its operator (``lab.cluster.OperatorLab``: settings
    # a stand-in fixes, such as the lab EC2's endpoint, and the environment)
    lab_operator: str = ""
    # "module:name" of what the lab runs or does in place of the cluster's own controllers that give
    # nodes their addresses (``lab.cluster.StandIn``: Kubernetes' node IPAM controller, say)
    lab_stand_in: str = ""
    # a node's addresses are listed one by one, so it announces prefixes of any length inside the
    # cluster pools (not one node CIDR of the mask size): what routers filtering pod routes accept
    any_prefix_length: bool = False

    def part(self, attr: str) -> Any:
        """The object one of its ``"module:name"`` fields names; None when the field is empty."""
        ref: str = getattr(self, attr)
        return load(ref) if ref else None


for _spec, _default in (
    (
        IpamSpec(
            "cluster-pool",
            "the operator carves per-node CIDRs from clusterPoolIPv4PodCIDRList",
            static_cidrs=True,
            operator="podnet.operator.cluster_pool:OPERATOR",
        ),
        True,
    ),
    (
        IpamSpec(
            "kubernetes",
            "the node's spec.podCIDRs, as kube-controller-manager assigns them",
            waiting="waiting for Node.spec.podCIDRs (kube-controller-manager's node IPAM controller)",
            static_cidrs=True,
            needs_kubernetes="pod CIDRs from Node.spec.podCIDRs",
            node_object_cidrs=True,
            lab_stand_in="podnet.lab.kubeipam:NODE_IPAM_CONTROLLER",
        ),
        False,
    ),
    (
        IpamSpec(
            "crd",
            "addresses listed on the node's PodnetNode resource",
            waiting="reading the node's address pool (PodnetNode spec.ipam.pool)",
            needs_kubernetes="addresses from the node's PodnetNode spec.ipam.pool",
            lab_stand_in="podnet.lab.kubeipam:CRD_POOLS",
            any_prefix_length=True,
        ),
        False,
    ),
    (
        IpamSpec(
            "multi-pool",
            "several named pools; the operator hands out CIDRs per pool on demand",
            waiting="reading the IP pools and the node's CIDRs (PodnetIPPool, PodnetNode spec.ipam.pools)",
            operator="podnet.operator.multi_pool:OPERATOR",
            settings="podnet.config.multi_pool:SETTINGS",
        ),
        False,
    ),
    (
        IpamSpec(
            "eni",
            "VPC addresses on extra interfaces, from the EC2 API",
            waiting="reading the node's ENIs from the operator (/podnet/v1/ipam/eni/<node>/status)",
            underlay_addresses=True,
            agent_component="podnet.agent.eni_routing:EniRouting",
            operator="podnet.operator.eni_cli:OPERATOR",
            settings="podnet.config.eni:SETTINGS",
            lab_operator="podnet.lab.eni:OPERATOR_LAB",
            kube_addresses="podnet.kube.eni:routed_addresses",
        ),
        False,
    ),
):
    IPAM_MODES.describe(_spec.name, _spec, default=_default)
