"""The lab's Kubernetes control plane (issue 13): the real kube-apiserver v1.20.2 built from Debian's
source, podnet's CRDs and least-privilege RBAC applied, and watches that resume and relist."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from labhelpers import wait_for
from lightkube import Client, KubeConfig, codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Node, Pod, Secret
from lightkube.types import PatchType

from podnet.config.agent import load_config
from podnet.kube.client import connect
from podnet.kube.resources import PodnetNode
from podnet.kube.watch import KubeEvent, ResourceWatcher
from podnet.lab import kubeapi, kubelet, pki
from podnet.lab import state as st
from podnet.lab.topology import Topology, load_topology

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")


def _admin_http(lab: str) -> httpx.Client:
    admin = pki.ensure_cert(lab, "kube-admin", org="system:masters")
    local = st.LabState.load(lab).info["kubernetes"]["local"]  # type: ignore[union-attr]
    return httpx.Client(base_url=local, verify=admin.ssl_context(), timeout=10, trust_env=False)


def _token_kubeconfig(lab: str, account: str, path: Path) -> Path:
    """A kubeconfig with a TokenRequest token of ``kube-system/<account>``: exactly its role."""
    with _admin_http(lab) as http:
        answer = http.post(
            f"/api/v1/namespaces/kube-system/serviceaccounts/{account}/token",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        answer.raise_for_status()
        token = answer.json()["status"]["token"]
        server = str(http.base_url).rstrip("/")
    ca = pki.ensure_cert(lab, "kube-admin", org="system:masters").ca
    path.write_text(kubeconfig_text(server, ca, token))
    return path


def kubeconfig_text(server: str, ca: str, token: str) -> str:
    return kubeapi.kubeconfig(server, ca, {"token": token}, name="podnet-agent")


def _pnn(name: str, ip: str) -> Any:
    return PodnetNode(metadata=ObjectMeta(name=name), spec={"addresses": [{"type": "InternalIP", "ip": ip}]})


@pytest.fixture
def kube_lab(lab_up: Callable[..., Topology]) -> Topology:
    topo = dataclasses.replace(load_topology("l2"), kubernetes=True, pods=())
    return lab_up(topo, cluster=False)


def test_api_server_crds_and_least_privilege_rbac(kube_lab: Topology, tmp_path: Path) -> None:
    lab = kube_lab.name
    with _admin_http(lab) as http:
        assert http.get("/version").json()["gitVersion"] == "v1.20.2"
    admin = connect(kubeapi.kubeconfig_path(lab))
    assert list(admin.list(PodnetNode)) == []  # the CRD is served
    agent = connect(_token_kubeconfig(lab, "podnet-agent", tmp_path / "agent.kubeconfig"))
    assert list(agent.list(Node)) == []
    created = agent.create(_pnn("node1", "192.168.1.11"))
    assert created.spec["addresses"][0]["ip"] == "192.168.1.11"
    status = {"status": {"health": "ok", "endpoints": 3}}
    agent.patch(PodnetNode.Status, "node1", status, patch_type=PatchType.MERGE)  # CRDs: no strategic merge
    assert admin.get(PodnetNode, "node1").status["endpoints"] == 3
    for forbidden in (
        lambda: agent.delete(PodnetNode, "node1"),
        lambda: list(agent.list(Secret, namespace="kube-system")),
        lambda: agent.create(Node(metadata=ObjectMeta(name="rogue"))),
    ):
        with pytest.raises(ApiError) as denied:
            forbidden()
        assert denied.value.status.code == 403
    operator = connect(_token_kubeconfig(lab, "podnet-operator", tmp_path / "operator.kubeconfig"))
    operator.delete(PodnetNode, "node1")
    assert list(admin.list(PodnetNode)) == []
    bad = PodnetNode(metadata=ObjectMeta(name="bad"), spec={"vtepMAC": "not-a-mac"})
    with pytest.raises(ApiError) as invalid:
        admin.create(bad)
    assert invalid.value.status.code == 422  # the CRD's schema is enforced


def _events(into: list[KubeEvent], lock: threading.Lock) -> Callable[[KubeEvent], None]:
    def on_event(event: KubeEvent) -> None:
        with lock:
            into.append(event)

    return on_event


def _restart(topo: Topology, name: str) -> None:
    """Kill a lab process by its recorded PID (as a crash would) and let the lab start it again."""
    state = st.LabState.load(topo.name)
    assert state is not None
    rec = state.process(name)
    assert rec is not None and rec.running()
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not rec.running(), f"{name} to die")
    kubeapi.ensure_kube_control_plane(topo, state)


def test_watch_resumes_after_a_dropped_stream_and_relists_after_410(kube_lab: Topology) -> None:
    lab = kube_lab.name
    kubeconfig = kubeapi.kubeconfig_path(lab)
    admin = connect(kubeconfig)
    admin.create(_pnn("a", "192.168.1.1"))
    admin.create(_pnn("b", "192.168.1.2"))
    seen: list[KubeEvent] = []
    lock = threading.Lock()
    first = ResourceWatcher(lambda: connect(kubeconfig), PodnetNode, _events(seen, lock)).start()
    assert first.wait_synced(20)
    assert set(first.snapshot()) == {"a", "b"} and first.relists == 1

    # the stream drops (the forwarder dies and comes back): the watch resumes from its version
    _restart(kube_lab, kubeapi.FORWARDER)
    admin = connect(kubeconfig)
    admin.create(_pnn("c", "192.168.1.3"))
    wait_for(lambda: "c" in first.snapshot(), "the resumed watch to see c")
    assert first.resumes >= 1 and first.relists == 1  # nothing listed again
    first.stop()

    # an old version after an API server restart (its watch cache starts anew): 410, list, diff
    later = ResourceWatcher(
        lambda: connect(kubeconfig),
        PodnetNode,
        _events(seen, lock),
        known=first.snapshot(),
        version=first.version,
    )
    admin.delete(PodnetNode, "b")
    admin.create(_pnn("d", "192.168.1.4"))
    _restart(kube_lab, kubeapi.APISERVER)
    with lock:
        seen.clear()
    later.start()
    wait_for(lambda: set(later.snapshot()) == {"a", "c", "d"}, "the relisted snapshot")
    assert later.relists == 1
    with lock:
        changes = sorted((e.type, e.name) for e in seen)
    assert changes == [("ADDED", "d"), ("DELETED", "b")]  # deletions are reported; a and c are not news
    later.stop()


def test_agent_client_is_refused_without_credentials(kube_lab: Topology, tmp_path: Path) -> None:
    local = st.LabState.load(kube_lab.name).info["kubernetes"]["local"]  # type: ignore[union-attr]
    ca = pki.ensure_cert(kube_lab.name, "kube-admin", org="system:masters").ca
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(kubeconfig_text(local, ca, "not-a-token"))
    client: Client = connect(path)
    with pytest.raises(ApiError) as refused:
        list(client.list(PodnetNode))
    assert refused.value.status.code == 401


MANIFEST = kubeapi.MANIFESTS / "podnet.yaml"


def test_deployment_manifests_pass_server_side_dry_run_and_say_what_podnet_accepts(
    kube_lab: Topology,
) -> None:
    """The DaemonSet, Deployment and ConfigMap are accepted by the API server (dry run: nothing is
    created), every flag their commands use exists, and the ConfigMap's settings load."""
    objs = list(codecs.load_all_yaml(MANIFEST.read_text()))
    assert [o.kind for o in objs] == ["ConfigMap", "DaemonSet", "Deployment"]
    config = KubeConfig.from_file(str(kubeapi.kubeconfig_path(kube_lab.name)))
    dry = Client(config=config, dry_run=True, trust_env=False)
    for obj in objs:
        dry.create(obj)
    admin = connect(kubeapi.kubeconfig_path(kube_lab.name))
    assert list(admin.list(DaemonSet, namespace="kube-system")) == []  # a dry run made nothing
    for obj in objs[1:]:
        spec = obj.spec.template.spec
        for container in [*(spec.initContainers or []), *spec.containers]:
            argv = container.command
            assert argv[0] == "podnet"
            helptext = subprocess.run(
                [str(Path(sys.executable).parent / "podnet"), argv[1], "--help"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            for flag in (a for a in argv if a.startswith("--")):
                assert flag in helptext, f"{container.name}: podnet {argv[1]} has no {flag}"
    settings = yaml.safe_load(objs[0].data["config.yaml"])
    loaded = load_config(settings, {"K8S_NODE_NAME": "node1"})
    assert (loaded.ipam_mode, loaded.datastore) == ("cluster-pool", "kubernetes")


def test_the_lab_plays_kubelet(kube_lab: Topology) -> None:
    """Node objects with their underlay address; a namespace with its default ServiceAccount; a
    Pod bound to its node, whose UID goes into a kubelet's CNI_ARGS; its addresses in status."""
    admin = connect(kubeapi.kubeconfig_path(kube_lab.name))
    kubelet.register_nodes(admin, kube_lab)
    kubelet.register_nodes(admin, kube_lab)  # idempotent, as `lab up` is
    nodes = {n.metadata.name: n for n in admin.list(Node)}
    assert set(nodes) == {h.name for h in kube_lab.nodes}
    first = kube_lab.nodes[0]
    internal = [a.address for a in nodes[first.name].status.addresses if a.type == "InternalIP"]
    assert internal == [str(first.primary.address.ip)]
    kubelet.ensure_namespace(admin, "team-a", labels={"tier": "web"})
    uid = kubelet.register_pod(
        admin, "team-a", "web-1", first.name, annotations={"ipam.podnet.io/ip-pool": "blue"}
    )
    pod = admin.get(Pod, "web-1", namespace="team-a")
    assert pod.spec.nodeName == first.name and pod.metadata.uid == uid
    assert kubelet.cni_args("team-a", "web-1", "cid", uid) == (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=cid;K8S_POD_UID={uid}"
    )
    kubelet.report_pod_ips(admin, "team-a", "web-1", ["10.244.1.7"])
    assert admin.get(Pod, "web-1", namespace="team-a").status.podIPs[0].ip == "10.244.1.7"
    kubelet.delete_pod(admin, "team-a", "web-1")
    kubelet.delete_pod(admin, "team-a", "web-1")  # gone already: fine
