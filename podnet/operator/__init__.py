"""The podnet operator: cluster-wide IPAM, one operator per mode that needs one (``IpamSpec.operator``),
reclaiming the CIDRs of gone nodes."""

from podnet.operator.cli import main
from podnet.operator.cluster_pool import ClusterPoolOperator, pool_status, run_operator
from podnet.operator.plan import PoolPlan, plan_pool
from podnet.store.nodes import wait_for_pod_cidrs

__all__ = [
    "ClusterPoolOperator",
    "PoolPlan",
    "main",
    "plan_pool",
    "pool_status",
    "run_operator",
    "wait_for_pod_cidrs",
]
