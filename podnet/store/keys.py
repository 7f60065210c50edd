"""The etcd key layout under ``/podnet/v1/`` (documented in docs/store.md).

Only node registrations live on a lease (a dead node disappears); CIDR allocations, the per-node
CIDR index and the "node gone since" markers do not, so a node that comes back finds its CIDR.
"""

from __future__ import annotations

import ipaddress

from podnet.model import IPNetwork

ROOT = "/podnet/v1/"
NODES_PREFIX = ROOT + "nodes/"  # <name> -> NodeInfo JSON + "requestedPodCIDRs", on the node's lease
AGENTS_PREFIX = ROOT + "agents/"  # <name> -> {"owner", "pid", "since"}: which agent serves it, on its lease
PODCIDRS_PREFIX = ROOT + "podcidrs/"  # <name> -> {"podCIDRs": [...]}, written by the operator
CLUSTER_POOL_PREFIX = ROOT + "ipam/cluster-pool/"  # <cidr> -> node name (CAS-created)
NODE_GONE_PREFIX = ROOT + "ipam/node-gone/"  # <name> -> {"since": unix seconds}
NODESTATE_PREFIX = ROOT + "nodestate/"  # <name> -> {"heartbeat", "endpoints"}: the agent's last report
STATUS_PREFIX = ROOT + "status/"
OPERATOR_STATUS_KEY = STATUS_PREFIX + "operator/cluster-pool"  # {"state", "message", counts...}


def _checked_name(name: str) -> str:
    if not name or "/" in name or name.strip() != name:
        raise ValueError(f"invalid node name {name!r}: it must be non-empty, without '/' or spaces")
    return name


def node_key(name: str) -> str:
    return NODES_PREFIX + _checked_name(name)


def agent_key(name: str) -> str:
    return AGENTS_PREFIX + _checked_name(name)


def podcidrs_key(name: str) -> str:
    return PODCIDRS_PREFIX + _checked_name(name)


def nodestate_key(name: str) -> str:
    return NODESTATE_PREFIX + _checked_name(name)


def node_gone_key(name: str) -> str:
    return NODE_GONE_PREFIX + _checked_name(name)


def cluster_pool_key(cidr: IPNetwork) -> str:
    return CLUSTER_POOL_PREFIX + str(cidr)


def name_from_key(prefix: str, key: str) -> str:
    if not key.startswith(prefix):
        raise ValueError(f"key {key!r} is not under {prefix!r}")
    return key[len(prefix) :]


def cidr_from_pool_key(key: str) -> IPNetwork:
    return ipaddress.ip_network(name_from_key(CLUSTER_POOL_PREFIX, key))


# NetworkPolicy on datastore etcd (``podnet policy apply -f``, docs/policy.md)
POLICY_PREFIX = ROOT + "policy/"
NETPOL_PREFIX = POLICY_PREFIX + "networkpolicies/"  # <namespace>/<name> -> the NetworkPolicy object
NAMESPACE_LABELS_PREFIX = POLICY_PREFIX + "namespaces/"  # <name> -> {"labels": {...}}
ENDPOINTS_PREFIX = ROOT + "endpoints/"  # <node> -> {"pods": [...]}: its pods' names, labels, addresses


def netpol_key(namespace: str, name: str) -> str:
    return f"{NETPOL_PREFIX}{_checked_name(namespace)}/{_checked_name(name)}"


def namespace_labels_key(name: str) -> str:
    return NAMESPACE_LABELS_PREFIX + _checked_name(name)


def endpoints_key(node: str) -> str:
    return ENDPOINTS_PREFIX + _checked_name(node)
