"""The lab plays the kubelet's part against its API server: Node objects for its nodes, Namespace
and Pod objects for its pods, the pod's addresses in its status, and the CNI_ARGS a kubelet
(dockershim/CRI) passes to the plugin.

Design fact: what a kubelet and the controllers that the lab does not run would write, and no
more: a Node with its InternalIP and hostname, the ``default`` ServiceAccount of each namespace
(the service-account controller's job; pod admission needs it), Pods bound to their node
(``spec.nodeName``), status ``Running`` with ``podIPs`` after the CNI ADD.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import Container, NodeAddress, NodeStatus, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccount
from lightkube.types import PatchType

from podnet.lab.topology import Host, Topology

CONFLICT = 409
NOT_FOUND = 404
PAUSE_IMAGE = "podnet-lab/pause"  # never pulled: no kubelet runs


def cni_args(namespace: str, name: str, container_id: str, uid: str) -> str:
    """CNI_ARGS as a kubelet passes them (``IgnoreUnknown`` first, as it does)."""
    return (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )


def _create(client: Client, obj: object) -> None:
    """Create unless it exists (``lab up`` is idempotent)."""
    try:
        client.create(obj)  # type: ignore[call-overload]
    except ApiError as exc:
        if exc.status.code != CONFLICT:
            raise


def register_node(client: Client, host: Host, real: bool = False) -> None:
    """The Node object of ``host`` with its underlay address, as the kubelet registers it. A node
    where a real kubelet will run gets a capacity too: kubelet 1.20.2 panics (a nil map in
    reconcileHugePageResource) when it finds its Node without one, and the agents need the Node
    before kubelet starts."""
    labels = {"kubernetes.io/hostname": host.name, "kubernetes.io/os": "linux"}
    _create(client, Node(metadata=ObjectMeta(name=host.name, labels=labels)))
    addresses = [NodeAddress(type="InternalIP", address=str(host.primary.ip)),
                 NodeAddress(type="Hostname", address=host.name)]  # fmt: skip
    status = {"status": NodeStatus(addresses=addresses).to_dict()}
    if real:
        status["status"]["capacity"] = {"pods": "0"}
        status["status"]["allocatable"] = {"pods": "0"}
    client.patch(Node.Status, host.name, status, patch_type=PatchType.MERGE)


def register_nodes(client: Client, topo: Topology, real: tuple[str, ...] = ()) -> None:
    for host in topo.nodes:
        register_node(client, host, real=host.name in real)


def ensure_namespace(client: Client, name: str, labels: Mapping[str, str] | None = None,
                     annotations: Mapping[str, str] | None = None) -> None:  # fmt: skip
    """The namespace and its ``default`` ServiceAccount."""
    meta = ObjectMeta(name=name, labels=dict(labels or {}), annotations=dict(annotations or {}))
    _create(client, Namespace(metadata=meta))
    _create(client, ServiceAccount(metadata=ObjectMeta(name="default", namespace=name)))


def register_pod(
    client: Client,
    namespace: str,
    name: str,
    node: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> str:
    """The Pod object bound to ``node``; returns its UID (for K8S_POD_UID)."""
    meta = ObjectMeta(
        name=name, namespace=namespace, labels=dict(labels or {}), annotations=dict(annotations or {})
    )
    spec = PodSpec(nodeName=node, containers=[Container(name="app", image=PAUSE_IMAGE)],
                   automountServiceAccountToken=False)  # fmt: skip
    _create(client, Pod(metadata=meta, spec=spec))
    uid = client.get(Pod, name, namespace=namespace).metadata.uid
    return str(uid)


def report_pod_ips(client: Client, namespace: str, name: str, ips: list[str]) -> None:
    """What the kubelet reports after the sandbox is wired: Running, with the pod's addresses."""
    status = {"status": {"phase": "Running", "podIP": ips[0] if ips else None,
                         "podIPs": [{"ip": ip} for ip in ips]}}  # fmt: skip
    client.patch(Pod.Status, name, status, namespace=namespace, patch_type=PatchType.MERGE)


def delete_pod(client: Client, namespace: str, name: str) -> None:
    with contextlib.suppress(ApiError):
        client.delete(Pod, name, namespace=namespace, grace_period=0)
