"""The lab's Kubernetes control plane: kube-apiserver on the control-plane host, against the lab's
etcd (keys under ``/podnet-kube``, apart from podnet's own ``/podnet/v1``), and a kubeconfig per lab.

Design fact: no kubelet runs. The lab plays its part (Node and Pod objects, the CNI calls with a
kubelet's CNI_ARGS); the API server, its RBAC and its watches are the real v1.20.2, built from
Debian's source by ``scripts/build-kube.sh`` (cached under ``/var/cache/podnet/kubernetes-*``).
Certificates come from the lab's CA (``podnet.lab.pki``): the API server's serving certificate, an
admin client certificate (O=system:masters) and the service-account signing key. The API server
listens on the underlay; ``<lab dir>/kubeconfig`` reaches it from the machine through the lab's
forwarder on 127.0.0.1 (``podnet.lab.kubeforward``), so ``kubectl --kubeconfig`` works from the host.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from podnet.lab import pki
from podnet.lab import state as st
from podnet.lab.kubeobjects import apply_manifests
from podnet.lab.topology import Topology
from podnet.lab.topomodel import url_host
from podnet.store.client import TlsFiles
from podnet.util import proc
from podnet.util.files import log_tail

APISERVER_PORT = 6443
ETCD_PREFIX = "/podnet-kube"
SERVICE_CIDR = "10.96.0.0/16"  # ClusterIPs are only allocated (no kube-proxy runs in the lab)
SERVICE_IP = "10.96.0.1"  # the "kubernetes" service's ClusterIP (the first of SERVICE_CIDR)
SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
BINARIES = ("kube-apiserver", "kube-controller-manager")
APISERVER = "kube-apiserver"
FORWARDER = "kube-forward"
READY_TIMEOUT = 60.0
MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


class KubeError(RuntimeError):
    """The lab's Kubernetes control plane could not be started; the message says what to do."""


def binaries() -> dict[str, Path]:
    """kube-apiserver and kube-controller-manager as scripts/build-kube.sh left them."""
    cache = Path(os.environ.get("PODNET_CACHE", "/var/cache/podnet"))
    for d in sorted(cache.glob("kubernetes-*"), reverse=True):
        found = {b: d / "bin" / b for b in BINARIES}
        if (d / ".complete").exists() and all(os.access(p, os.X_OK) for p in found.values()):
            return found
    raise KubeError(
        f"kube-apiserver is not built under {cache}: run `bash scripts/build-kube.sh` (it builds "
        "v1.20.2 from Debian's source once, ~4 minutes, and caches it)"
    )


def binary(name: str) -> Path:
    """Another binary scripts/build-kube.sh built beside kube-apiserver (kubelet, kube-scheduler,
    kubectl, pause)."""
    path = binaries()[APISERVER].parent / name
    if not os.access(path, os.X_OK):
        raise KubeError(
            f"{name} is not built in {path.parent}: run `bash scripts/build-kube.sh` (a cache from before "
            "it built kubelet, kube-scheduler, kubectl and pause is rebuilt)"
        )
    return path


def on_kubernetes(topo: Topology) -> bool:
    """Whether the lab's agents and operator use the API server (cluster ``datastore: kubernetes``)."""
    return str(topo.cluster.get("datastore", "etcd")).strip().lower() == "kubernetes"


def wanted(topo: Topology) -> bool:
    """Whether this lab runs a Kubernetes control plane (``controlPlane.kubernetes: true``, or the
    Kubernetes datastore)."""
    return topo.kubernetes or on_kubernetes(topo)


def account_kubeconfig_path(lab: str, account: str) -> Path:
    """The kubeconfig of ``kube-system/<account>`` for processes inside the lab (the underlay URL)."""
    return kube_dir(lab) / f"{account}.kubeconfig"


TOKEN_SECONDS = 7 * 24 * 3600  # a lab lives for minutes to hours


def write_account_kubeconfig(topo: Topology, account: str, local: str, admin: TlsFiles) -> Path:
    """A TokenRequest token of the service account (exactly its RBAC role) in a kubeconfig."""
    import httpx2 as httpx

    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS}}  # fmt: skip
    with httpx.Client(base_url=local, verify=admin.ssl_context(), timeout=10, trust_env=False) as http:
        answer = http.post(f"/api/v1/namespaces/kube-system/serviceaccounts/{account}/token", json=body)
    if answer.status_code >= 300:
        raise KubeError(
            f"cannot get a token for kube-system/{account}: HTTP {answer.status_code} {answer.text[-300:]}"
        )
    path = account_kubeconfig_path(topo.name, account)
    path.write_text(
        kubeconfig(server_url(topo), admin.ca, {"token": answer.json()["status"]["token"]}, account)
    )
    os.chmod(path, 0o600)
    return path


def kubeconfig_path(lab: str) -> Path:
    return st.lab_dir(lab) / "kubeconfig"


def kube_dir(lab: str) -> Path:
    return st.lab_dir(lab) / "kube"


def server_url(topo: Topology) -> str:
    """The API server as the nodes reach it, over the underlay."""
    return f"https://{url_host(topo.control_plane.primary.ip)}:{APISERVER_PORT}"


def apiserver_argv(topo: Topology, etcd: list[str], etcd_tls: TlsFiles | None) -> list[str]:
    cp = topo.control_plane.primary.ip
    lab = topo.name
    ips = (str(cp), "127.0.0.1", SERVICE_IP)
    serving = pki.ensure_cert(lab, "kube-apiserver", ips, server=True, dns=SERVICE_NAMES)
    sa_key, sa_pub = pki.ensure_signing_key(lab, "service-accounts")
    to_kubelets = pki.ensure_cert(lab, "kube-apiserver-kubelet-client", org="system:masters")
    argv = [
        str(binaries()[APISERVER]),
        f"--etcd-servers={','.join(etcd)}",
        f"--etcd-prefix={ETCD_PREFIX}",
        "--bind-address=0.0.0.0",  # inside the control-plane host's namespace only
        f"--advertise-address={cp}",
        f"--secure-port={APISERVER_PORT}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={serving.ca}",
        f"--cert-dir={kube_dir(lab) / 'certs'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-signing-key-file={sa_key}",
        f"--service-account-key-file={sa_pub}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",  # the agent's DaemonSet is privileged (dry-run checks it)
        "--endpoint-reconciler-type=none",
        "--kubelet-preferred-address-types=InternalIP",  # real nodes: exec/logs reach the underlay address
        f"--kubelet-client-certificate={to_kubelets.cert}",  # kubelets take x509 clients of the lab's CA
        f"--kubelet-client-key={to_kubelets.key}",
        "--profiling=false",
        *DUAL_STACK_GATES * dual_stack(topo),  # Node.spec.podCIDRs of both families (alpha in v1.20)
    ]
    if etcd_tls is not None:
        argv += [
            f"--etcd-cafile={etcd_tls.ca}",
            f"--etcd-certfile={etcd_tls.cert}",
            f"--etcd-keyfile={etcd_tls.key}",
        ]
    return argv


def kubeconfig(server: str, ca: str, user: dict[str, str], name: str = "podnet-lab") -> str:
    """A kubeconfig with one cluster, one user (client certificate or token) and one context."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def ensure_kube_control_plane(topo: Topology, state: st.LabState) -> int:
    """Start kube-apiserver and the forwarder if they do not run, write the kubeconfigs, apply
    podnet's CRDs and RBAC; returns how many processes started."""
    if not wanted(topo):
        return 0
    from podnet.lab.controlplane import client_tls, etcd_endpoints

    lab, ns = topo.name, st.ns_name(topo.name, topo.control_plane.name)
    run = st.lab_dir(lab)
    started = 0
    rec = state.process(APISERVER)
    if rec is None or not rec.running():
        etcd_tls = client_tls(topo, "kube-apiserver")
        argv = apiserver_argv(topo, etcd_endpoints(topo), etcd_tls)
        log = run / "logs" / f"{APISERVER}.log"
        child = proc.spawn(argv, ns, log)
        state.add_process(st.ProcessRecord(APISERVER, child.pid, ns, [APISERVER], str(log)))
        started += 1
    port = _ensure_forwarder(topo, state)
    admin = pki.ensure_cert(lab, "kube-admin", org="system:masters")
    local = f"https://127.0.0.1:{port}"
    user = {"client-certificate": admin.cert, "client-key": admin.key}
    kubeconfig_path(lab).write_text(kubeconfig(local, admin.ca, user))
    os.chmod(kubeconfig_path(lab), 0o600)
    wait_ready(local, admin, state)
    apply_manifests(kubeconfig_path(lab), [MANIFESTS / "crds.yaml", MANIFESTS / "rbac.yaml"])
    for account in ("podnet-agent", "podnet-operator"):
        write_account_kubeconfig(topo, account, local, admin)
    if on_kubernetes(topo):  # the kubelet's part: Node objects before the agents start
        from podnet.kube.client import connect
        from podnet.lab.kubelet import register_nodes

        client = connect(kubeconfig_path(lab))
        try:
            register_nodes(client, topo, real=topo.real_kubelets)
        finally:
            client.close()
    state.info["kubernetes"] = {
        "server": server_url(topo),
        "local": local,
        "kubeconfig": str(kubeconfig_path(lab)),
    }
    state.save()
    return started


CONTROLLER_MANAGER = "kube-controller-manager"


DUAL_STACK_GATES = ("--feature-gates=IPv6DualStack=true",)  # v1.20 (Debian's): alpha, off by default


def dual_stack(topo: Topology) -> bool:
    """Whether the lab's pods get IPv6 addresses too (``ipv6.enabled``)."""
    from podnet.config import ConfigError, load_config

    node = topo.nodes[0].name
    try:
        return load_config({**topo.node_config(node), "nodeName": node}, {}, None).enable_ipv6
    except ConfigError:
        return False


def ensure_controller_manager(
    topo: Topology,
    state: st.LabState,
    pools: list[str],
    mask: int,
    pools6: Sequence[str] = (),
    mask6: int = 64,
) -> int:
    """kube-controller-manager with only the node IPAM controller (ipam.mode kubernetes): it gives
    every Node a ``spec.podCIDRs`` of ``mask`` bits out of ``pools`` (dual stack: and one of ``mask6``
    bits out of ``pools6``); returns 1 when started."""
    rec = state.process(CONTROLLER_MANAGER)
    if rec is not None and rec.running():
        return 0
    lab, ns = topo.name, st.ns_name(topo.name, topo.control_plane.name)
    admin = pki.ensure_cert(lab, "kube-admin", org="system:masters")
    config = kube_dir(lab) / "controller-manager.kubeconfig"
    config.write_text(
        kubeconfig(server_url(topo), admin.ca, {"client-certificate": admin.cert, "client-key": admin.key})
    )
    os.chmod(config, 0o600)
    argv = [
        str(binaries()[CONTROLLER_MANAGER]), f"--kubeconfig={config}", "--controllers=nodeipam",
        "--allocate-node-cidrs=true", f"--cluster-cidr={','.join([*pools, *pools6])}",
        *([f"--node-cidr-mask-size-ipv4={mask}", f"--node-cidr-mask-size-ipv6={mask6}", *DUAL_STACK_GATES]
          if pools6 and pools else [f"--node-cidr-mask-size={mask if pools else mask6}"]),
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--bind-address=127.0.0.1", "--secure-port=10257",
        "--port=0", "--leader-elect=false",
    ]  # fmt: skip
    log = st.lab_dir(lab) / "logs" / f"{CONTROLLER_MANAGER}.log"
    child = proc.spawn(argv, ns, log)
    state.add_process(st.ProcessRecord(CONTROLLER_MANAGER, child.pid, ns, [CONTROLLER_MANAGER], str(log)))
    state.save()
    return 1


def _ensure_forwarder(topo: Topology, state: st.LabState) -> int:
    """The forwarder from 127.0.0.1 into the control-plane host; returns its local port."""
    lab = topo.name
    port_file = kube_dir(lab) / "forward.port"
    rec = state.process(FORWARDER)
    if rec is not None and rec.running() and port_file.exists():
        return int(port_file.read_text())
    kube_dir(lab).mkdir(parents=True, exist_ok=True)
    previous = port_file.read_text().strip() if port_file.exists() else "0"  # keeps kubeconfig valid
    port_file.unlink(missing_ok=True)
    target = f"{url_host(topo.control_plane.primary.ip)}:{APISERVER_PORT}"
    cp_ns = st.ns_name(lab, topo.control_plane.name)
    argv = [sys.executable, "-m", "podnet.lab.kubeforward", "--netns", cp_ns, "--target", target,
            "--port-file", str(port_file), "--port", previous]  # fmt: skip
    log = st.lab_dir(lab) / "logs" / f"{FORWARDER}.log"
    child = proc.spawn(argv, None, log)  # listens on the machine's 127.0.0.1, connects in the lab
    state.add_process(st.ProcessRecord(FORWARDER, child.pid, "", [sys.executable], str(log)))
    state.save()
    deadline = time.monotonic() + 10
    while not port_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise KubeError(f"the lab's API forwarder did not start; see {log}")
        time.sleep(0.02)
    return int(port_file.read_text())


def wait_ready(url: str, tls: TlsFiles, state: st.LabState, timeout: float = READY_TIMEOUT) -> None:
    """Until ``/readyz`` answers ok; an error naming the log if the API server exits or is slow."""
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    rec = state.process(APISERVER)
    with httpx.Client(verify=tls.ssl_context(), timeout=5, trust_env=False) as http:
        while time.monotonic() < deadline:
            if rec is not None and not rec.running():
                raise KubeError(f"kube-apiserver exited during start-up; see {rec.log}{log_tail(rec.log, 6)}")
            try:
                answer = http.get(f"{url}/readyz")
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}: {answer.text.strip()[-300:]}"
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
    log = rec.log if rec is not None else "its log"
    raise KubeError(f"kube-apiserver not ready at {url} after {timeout:g}s ({last}); see {log}")
