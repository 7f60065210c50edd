"""An IPAM mode from outside podnet's tree, loaded with ``PODNET_PLUGINS=podnet_dummyipam`` (and
this directory on ``PYTHONPATH``): the proof that an IPAM mode without an operator is one spec plus
one allocator factory, and nothing else in podnet names it.

``dummy-node``: every node carves its own pod CIDR out of the cluster pool, the one at index
100 + the number its name ends in (node3 of 10.244.0.0/16 with mask 24: 10.244.103.0/24). No
operator runs; the node's record carries the CIDR, so peers route to it as to any other.
"""

from __future__ import annotations

import re

from podnet.ipam.base import IPAMContext, register_mode
from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.registry import IPAM_MODES
from podnet.specs.ipam import IpamSpec

NAME = "dummy-node"
FIRST = 100

IPAM_MODES.describe(
    NAME,
    IpamSpec(NAME, "each node carves its own CIDR from the cluster pool by its name", static_cidrs=True),
)


def own_cidr(ctx: IPAMContext) -> MultiCIDRAllocator:
    found = re.search(r"(\d+)$", ctx.node_name)
    if not ctx.cluster_pools or found is None:
        raise ValueError(f"{NAME}: needs clusterPoolIPv4PodCIDRList and a node name ending in a number")
    pool = ctx.cluster_pools[0]
    subnets = pool.subnets(new_prefix=ctx.mask_size)
    index = FIRST + int(found.group(1))
    for i, subnet in enumerate(subnets):
        if i == index:
            return MultiCIDRAllocator([subnet])
    raise ValueError(f"{NAME}: {pool} has no /{ctx.mask_size} number {index}")


register_mode(NAME, own_cidr)
