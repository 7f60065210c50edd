"""podnet installed on the lab's real nodes the way a user installs it (``controlPlane.podnet:
manifests``): ``kubectl apply`` of deploy/kubernetes/podnet.yaml, its ConfigMap carrying the
lab's cluster settings, the image ``podnet:<version>`` imported into each node's containerd
(``podnet.lab.podnetimage``). The DaemonSet's init container installs the CNI plugin and conflist
into the node's /opt/cni/bin and /etc/cni/net.d, the agent runs as its pod, the operator as a
Deployment; the lab only waits for them. (The CRDs and RBAC are the lab's already.)
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import yaml

from podnet.lab import kubeapi
from podnet.lab.build import LabError
from podnet.lab.topology import Topology

CONFIGMAP = "podnet-config"
APPLY_TIMEOUT = 60.0
SETTINGS_REFUSED = ("bgp",)  # per-node settings the lab fills for its own agents only


class InstallError(LabError):
    """podnet's manifests could not be applied; the message names the object and the fix."""


def cluster_settings(topo: Topology) -> dict[str, Any]:
    """The ConfigMap's config.yaml: the cluster's settings as the topology gives them (the
    agents find their node name, device and addresses themselves) (pure)."""
    from podnet.lab.cluster import LAB_ENDPOINT_GC

    cfg = {k: v for k, v in topo.cluster.items() if k not in ("etcd",)}
    cfg.setdefault("endpointGCInterval", LAB_ENDPOINT_GC)
    cfg["datastore"] = "kubernetes"
    return cfg


def check(topo: Topology) -> None:
    """What a DaemonSet install cannot honour, refused before anything is made."""
    if topo.podnet_install == "lab":
        return
    lab_nodes = sorted(h.name for h in topo.nodes if h.name not in topo.real_kubelets)
    if lab_nodes:
        raise InstallError(
            f"controlPlane.podnet: {topo.podnet_install}: {', '.join(lab_nodes)} would get podnet's "
            "DaemonSet pod but have no kubelet to run it: set controlPlane.kubelet: real"
        )
    per_node = sorted(h.name for h in topo.nodes if h.config)
    if per_node:
        raise InstallError(
            f"controlPlane.podnet: {topo.podnet_install}: nodes.{per_node[0]}.config: one ConfigMap holds "
            "the settings of every node's agent; move them to cluster:"
        )
    refused = [k for k in SETTINGS_REFUSED if k in topo.cluster]
    if refused:
        raise InstallError(
            f"controlPlane.podnet: {topo.podnet_install}: cluster.{refused[0]} needs per-node peers that "
            "only the lab's own agents get: use controlPlane.podnet: lab"
        )


def render(topo: Topology) -> str:
    """deploy/kubernetes/podnet.yaml with the ConfigMap's config.yaml replaced by the lab's
    settings; every other object as the file has it (pure but for reading the file)."""
    docs = [d for d in yaml.safe_load_all((kubeapi.MANIFESTS / "podnet.yaml").read_text()) if d]
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == CONFIGMAP:
            doc["data"]["config.yaml"] = yaml.safe_dump(cluster_settings(topo), sort_keys=True)
    return yaml.safe_dump_all(docs, sort_keys=False)


def kubectl(topo: Topology, *args: str, stdin: str | None = None, timeout: float = APPLY_TIMEOUT) -> str:
    argv = [str(kubeapi.binary("kubectl")), f"--kubeconfig={kubeapi.kubeconfig_path(topo.name)}", *args]
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise InstallError(f"kubectl {' '.join(args)}: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def apply(topo: Topology) -> None:
    """``kubectl apply`` of podnet's DaemonSet, operator and ConfigMap (the lab's settings)."""
    kubectl(topo, "apply", "-f", "-", stdin=render(topo))


def wait_rolled_out(topo: Topology, timeout: float = 180.0) -> None:
    """Until the agent DaemonSet has a ready pod on every node and the operator is available."""
    deadline = time.monotonic() + timeout
    for what in ("daemonset/podnet-agent", "deployment/podnet-operator"):
        left = max(deadline - time.monotonic(), 1.0)
        try:
            kubectl(topo, "-n", "kube-system", "rollout", "status", what, f"--timeout={left:.0f}s",
                    timeout=left + 10)  # fmt: skip
        except (InstallError, subprocess.TimeoutExpired) as exc:
            pods = kubectl(topo, "-n", "kube-system", "get", "pods", "-o", "wide")
            raise InstallError(
                f"{what} did not roll out in {timeout:.0f}s ({exc}); kube-system pods:\n{pods}\nthe agents' "
                f"logs are under {kubeapi.kube_dir(topo.name).parent}/kubenodes/<node>/var-log/pods/"
            ) from exc
