"""Which datastore-side parts an agent gets, from its configuration: the datastore itself, where
NetworkPolicies come from, who knows the pods' metadata, what probes the datastore for status.
Everything a Kubernetes-only part needs is imported only on ``datastore: kubernetes``."""

from __future__ import annotations

from podnet.agent.cni_handler import PodResolver
from podnet.agent.components import Component
from podnet.agent.reports import StoreProbe
from podnet.agent.startup import STORE_CONNECT_TIMEOUT, AgentError, connect_etcd, etcd_tls
from podnet.config import AgentConfig
from podnet.policy.sources import EtcdPolicySource, KubePolicySource, PolicySource
from podnet.registry import IPAM_MODES
from podnet.store.client import Store
from podnet.store.datastore import Datastore, EtcdDatastore


def open_datastore(config: AgentConfig) -> tuple[Datastore, Store | None]:
    """The configured datastore, reachable, and its etcd client on etcd (``AgentError`` saying
    which one and why not)."""
    if config.datastore == "kubernetes":
        from podnet.kube.datastore import KubeDatastore, KubeDatastoreError

        try:
            from_node = IPAM_MODES.spec(config.ipam_mode).node_object_cidrs
            return KubeDatastore.open(config.k8s_kubeconfig_path, STORE_CONNECT_TIMEOUT, from_node), None
        except KubeDatastoreError as exc:
            raise AgentError(str(exc)) from None
    store = connect_etcd(config.etcd_endpoints, etcd_tls(config))
    return EtcdDatastore(store), store


def policy_source(config: AgentConfig, store: Store | None) -> PolicySource:
    """Where NetworkPolicies come from: the API server, or (datastore etcd) the store."""
    if config.datastore == "kubernetes":
        from podnet.kube.client import connect

        return KubePolicySource(lambda: connect(config.k8s_kubeconfig_path))
    assert store is not None  # opened at start, before the components
    return EtcdPolicySource(store)


def pod_resolver(config: AgentConfig) -> PodResolver | None:
    """Pod metadata from the API server, on the Kubernetes datastore."""
    if config.datastore != "kubernetes":
        return None
    from podnet.agent.podmeta import KubePodResolver
    from podnet.kube.client import connect

    return KubePodResolver(lambda: connect(config.k8s_kubeconfig_path))


def datastore_probe(datastore: Datastore, store: Store | None) -> Component:
    """What status's KVStore / Kubernetes line comes from."""
    if store is not None:
        return StoreProbe(store)
    from podnet.kube.datastore import KubeProbe

    return KubeProbe(datastore)  # type: ignore[arg-type]  # on Kubernetes the datastore is a KubeDatastore
