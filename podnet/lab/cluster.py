"""The lab's cluster layer: the operator, one agent per node, and pods wired by the CNI plugin.

Pods are created exactly as a container runtime does it: a network namespace per pod, then the
``podnet-cni`` binary executed inside the node's namespace with the CNI environment and the
network configuration on stdin. ``lab down`` runs CNI DEL for every pod before the agents stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml
from lightkube import Client

from podnet.ipam.multi_pool_model import POOL_ANNOTATIONS
from podnet.kube.client import connect
from podnet.lab import kubeapi, kubelet
from podnet.lab import state as st
from podnet.lab.build import LabError
from podnet.lab.controlplane import client_tls, etcd_endpoints, lab_store
from podnet.lab.topology import Host, Pod, Topology
from podnet.registry import IPAM_MODES
from podnet.util import netns
from podnet.util.files import log_tail, write_private
from podnet.util.proc import spawn

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig

CNI_VERSION = "1.1.0"
AGENT_READY_TIMEOUT = 30.0


class ClusterError(LabError):
    """The lab's cluster did not come up; the message carries the end of the log to read."""


def exit_status(pid: int) -> str:
    """How a process this one spawned ended (it is a zombie until reaped), for error messages."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "exit status unknown: not a child of this process, or already reaped"
    if done == 0:
        return "still running"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


def node_dir(lab: str, node: str) -> Path:
    return st.lab_dir(lab) / "nodes" / node


def agent_socket(lab: str, node: str) -> Path:
    return node_dir(lab, node) / "agent.sock"


def _venv_bin(name: str) -> str:
    """A console script of this installation (the venv's), so that namespaces run the same code."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


LAB_ENDPOINT_GC = "10s"  # lab pods come and go in seconds (a topology may set its own)


def agent_config(topo: Topology, node: Host) -> dict[str, Any]:
    """The agent's YAML: the cluster's settings, the node's overrides, and the lab's wiring."""
    cfg = topo.node_config(node.name)
    cfg.setdefault("endpointGCInterval", LAB_ENDPOINT_GC)
    tls = client_tls(topo, node.name, make=False)  # start_agent makes it; checks write nothing
    etcd = {**cfg.get("etcd", {}), "endpoints": etcd_endpoints(topo)}
    if tls is not None:
        etcd.update(trustedCAFile=tls.ca, certFile=tls.cert, keyFile=tls.key)
    cfg.update(
        {
            "nodeName": node.name,
            "etcd": etcd,
            "agentSocket": str(agent_socket(topo.name, node.name)),
            "stateDir": str(node_dir(topo.name, node.name) / "state"),
            "devices": ["eth0"],
        }
    )
    if kubeapi.on_kubernetes(topo):
        cfg["k8sKubeconfigPath"] = str(kubeapi.account_kubeconfig_path(topo.name, "podnet-agent"))
    _fill_bgp_peers(topo, node, cfg)
    return cfg


def _fill_bgp_peers(topo: Topology, node: Host, cfg: dict[str, Any]) -> None:
    """With bgp.enabled, a peer without peerAddress is the node's gateway router; no peers at all
    means that router once per family the cluster runs (IPv6 when the node has an IPv6 gateway):
    one session per family, as Cilium peers per address family."""
    from podnet.config import ConfigError, one_setting

    bgp = cfg.get("bgp")
    if not isinstance(bgp, dict) or bgp.get("enabled") is not True:
        return
    try:
        ipv4, ipv6 = one_setting(cfg, "enable_ipv4") is not False, one_setting(cfg, "enable_ipv6") is True
    except ConfigError:
        ipv4, ipv6 = True, False  # the agent's config validation names the problem
    gateways = [g for g, on in ((node.gateway, ipv4), (node.gateway6, ipv6)) if on and g is not None]
    if not gateways:
        return
    peers = bgp.get("peers") or [{} for _ in gateways]
    if not isinstance(peers, list):
        return  # the agent's config validation names the problem
    filled = []
    for peer, gateway in zip(peers, gateways + [gateways[0]] * len(peers), strict=False):
        peer = dict(peer) if isinstance(peer, dict) else peer
        if isinstance(peer, dict) and "peerAddress" not in peer:
            peer["peerAddress"] = str(gateway)
            router = next((r for r in topo.routers for i in r.interfaces if gateway in i.ips), None)
            if "peerASN" not in peer and router is not None and router.asn is not None:
                peer["peerASN"] = router.asn
            peer.setdefault("ttlSecurity", True)  # the gateway is one hop away: GTSM in the lab
        filled.append(peer)
    cfg["bgp"] = {**bgp, "peers": filled}


def validate_cluster_config(topo: Topology) -> None:
    """Every node's agent configuration must load; fails before anything is created."""
    from podnet.config import ConfigError, load_config

    for node in topo.nodes:
        try:
            load_config(agent_config(topo, node), {}, None)
        except ConfigError as e:
            where = f"nodes.{node.name}.config" if node.config else "cluster"
            raise ClusterError(f"{where}: {e}") from e


class OperatorLab(Protocol):
    """The lab's part in running a mode's operator (``IpamSpec.lab_operator``)."""

    def settings(self, topo: Topology) -> dict[str, Any]:
        """Settings the lab fixes over the cluster's (a stand-in's endpoint, its region)."""
        ...

    def env(self, topo: Topology) -> dict[str, str] | None:
        """The operator's environment (None: the lab's own)."""
        ...


class StandIn(Protocol):
    """What the lab runs or does in place of a real cluster's own controllers that give nodes their
    addresses (``IpamSpec.lab_stand_in``: ``lab.kubeipam``'s, say)."""

    def ensure(self, topo: Topology, state: st.LabState, cfg: AgentConfig) -> int:
        """Make it so from the cluster's settings ``cfg`` (unless it already is); returns changes."""
        ...


def ensure_operator(topo: Topology, state: st.LabState) -> int:
    """Whatever gives nodes their addresses: the lab's stand-in for the cluster's own controllers
    when the mode's spec names one, podnet's operator for a mode it serves (with the flags the mode
    makes of the cluster's settings); nothing for a mode that needs nothing cluster-wide."""
    from podnet.config import load_config, merge
    from podnet.operator.serving import mode_operator

    cfg = load_config(agent_config(topo, topo.nodes[0]), {}, None)
    mode = cfg.ipam_mode
    spec = IPAM_MODES.spec(mode)
    stand_in: StandIn | None = spec.part("lab_stand_in")
    changes = stand_in.ensure(topo, state, cfg) if stand_in else 0
    if not spec.operator:
        return changes
    rec = state.process("operator")
    if rec is not None and rec.running():
        return changes
    cp_ns = st.ns_name(topo.name, topo.control_plane.name)
    log = st.lab_dir(topo.name) / "logs" / "operator.log"
    lab: OperatorLab | None = spec.part("lab_operator")
    settings = agent_config(topo, topo.nodes[0])
    node_cfg = load_config(merge(settings, lab.settings(topo)) if lab else settings, {}, None)
    argv = [_venv_bin("podnet"), "operator", "--grace-period", "60"]
    argv += mode_operator(mode).config_argv(node_cfg)
    tls = client_tls(topo, "operator")
    if kubeapi.on_kubernetes(topo):
        kubeconfig = kubeapi.account_kubeconfig_path(topo.name, "podnet-operator")
        argv += ["--datastore", "kubernetes", "--k8s-kubeconfig-path", str(kubeconfig)]
    else:
        argv += ["--etcd-endpoints", ",".join(etcd_endpoints(topo))]
        if tls is not None:
            argv += [
                "--etcd-trusted-ca-file",
                tls.ca,
                "--etcd-cert-file",
                tls.cert,
                "--etcd-key-file",
                tls.key,
            ]
    proc = spawn(argv, cp_ns, log, env=lab.env(topo) if lab else None)
    state.add_process(st.ProcessRecord("operator", proc.pid, cp_ns, argv, str(log)))
    return changes + 1


def start_agent(topo: Topology, state: st.LabState, node: Host) -> int:
    """Start ``node``'s agent unless its recorded process still runs; returns changes (0 or 1)."""
    name = f"agent-{node.name}"
    rec = state.process(name)
    if rec is not None and rec.running():
        return 0
    d = node_dir(topo.name, node.name)
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "agent.yaml"
    client_tls(topo, node.name)  # the certificate the configuration names
    write_private(conf, yaml.safe_dump(agent_config(topo, node), sort_keys=True))
    argv = [_venv_bin("podnet"), "agent", "--config", str(conf)]
    if node.pod_cidr is not None:
        argv += ["--requested-pod-cidr", str(node.pod_cidr)]
    log = st.lab_dir(topo.name) / "logs" / f"agent-{node.name}.log"
    proc = spawn(argv, st.ns_name(topo.name, node.name), log)
    state.add_process(st.ProcessRecord(name, proc.pid, st.ns_name(topo.name, node.name), argv, str(log)))
    return 1


def wait_agents_ready(topo: Topology, state: st.LabState, timeout: float = AGENT_READY_TIMEOUT) -> None:
    """Wait until every agent answers ``status`` with ready; name the log of the one that did not."""
    deadline = time.monotonic() + timeout
    pending = {n.name for n in topo.nodes}
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            rec = state.process(f"agent-{name}")
            if rec is not None and not rec.running():
                how = exit_status(rec.pid)
                lines = 80 if "signal" in how else 20  # a crash: faulthandler's stack of every thread
                raise ClusterError(
                    f"the agent of {name} exited during start ({how}):" + log_tail(rec.log, lines)
                )
            try:
                status = agent_request(topo.name, name, {"op": "status"}, timeout=2.0)
            except OSError as e:
                last[name] = str(e)
                continue
            if status.get("ready"):
                pending.discard(name)
            else:
                last[name] = json.dumps(status)[:300]
        if pending:
            time.sleep(0.1)
    if pending:
        name = sorted(pending)[0]
        rec = state.process(f"agent-{name}")
        operator = state.process("operator")  # what an agent waiting for its addresses waits for
        raise ClusterError(
            f"the agent of {name} is not ready after {timeout:g}s ({last.get(name, 'no answer')}); "
            f"{log_tail(rec.log) if rec else ''}"
            + (f"\noperator log:{log_tail(operator.log)}" if operator and operator.log else "")
        )


def wait_converged(topo: Topology, timeout: float = AGENT_READY_TIMEOUT) -> None:
    """Wait until every agent has planned for every other node with its pod CIDR known, so that
    when ``lab up`` returns the datapath is programmed everywhere."""
    deadline = time.monotonic() + timeout
    names = {n.name for n in topo.nodes}
    waiting: dict[str, str] = {}
    while time.monotonic() < deadline:
        waiting = {}
        for name in sorted(names):
            try:
                status = agent_request(topo.name, name, {"op": "status"}, timeout=2.0)
            except OSError as e:
                waiting[name] = str(e)
                continue
            peers = {p["name"]: p for p in status.get("peers", [])}
            missing = names - {name} - set(peers)
            pending = [p for p, info in peers.items() if any("no pod CIDR" in i for i in info["issues"])]
            if missing or pending:
                waiting[name] = f"peers not planned yet: {', '.join(sorted(missing | set(pending)))}"
        if not waiting:
            return
        time.sleep(0.1)
    raise ClusterError(f"agents did not converge in {timeout:g}s: {waiting}")


def agent_request(lab: str, node: str, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to a node agent's local API (a unix socket: reachable from any namespace)."""
    from podnet.agent.api import request as api_request

    return api_request(agent_socket(lab, node), request, timeout)


def cni_bin_dir(lab: str) -> Path:
    return st.lab_dir(lab) / "cni" / "bin"


def cni_binary(lab: str) -> str:
    """The lab's CNI plugin, installed by ``podnet install-cni`` into the lab's own directory."""
    return str(cni_bin_dir(lab) / "podnet")


def ensure_cni_installed(lab: str) -> int:
    """Install the plugin (the compiled one when built) into the lab's directory; 1 if written now."""
    from podnet.cni.install import compiled_plugin, install_cni, launcher_script, plugin_kind

    binary = Path(cni_binary(lab))
    if plugin_kind("auto") == "compiled":
        want = compiled_plugin().read_bytes()
    else:
        want = launcher_script(sys.executable).encode()
    if binary.exists() and binary.read_bytes() == want:
        return 0
    install_cni(cni_bin_dir(lab), st.lab_dir(lab) / "cni" / "net.d", python=sys.executable)
    return 1


def netconf(lab: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The network config a runtime hands the plugin; the pod's ``labels`` as CNI conventions
    pass them (``args.cni.labels``: what NetworkPolicy selects on datastore etcd)."""
    conf: dict[str, Any] = {
        "cniVersion": CNI_VERSION,
        "name": "podnet",
        "type": "podnet",
        "agentSocket": str(agent_socket(lab, node)),
    }
    if labels:
        conf["args"] = {"cni": {"labels": [{"key": k, "value": v} for k, v in sorted(labels.items())]}}
    return conf


def put_namespace_labels(topo: Topology) -> None:
    """The topology's ``namespaces:`` (their labels) in etcd, as ``podnet policy apply`` keeps
    Namespace documents (one transaction)."""
    from podnet.policy.documents import apply_documents, parse_documents

    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": dict(n.labels)}}
        for n in topo.namespaces
    ]
    with lab_store(topo) as store:
        apply_documents(store, parse_documents(docs))


def container_id(lab: str, pod: str) -> str:
    return f"{lab}-{pod}"


def runtime_args(pod: Pod) -> str:
    """CNI_ARGS as a runtime without an API server passes them: the pod's name, and the IP pool
    its annotations name (a mode with named pools reads ``IP_POOL`` on etcd)."""
    args = f"K8S_POD_NAME={pod.name};K8S_POD_NAMESPACE={pod.namespace}"
    pool = next((pod.annotations[k] for k in POOL_ANNOTATIONS if pod.annotations.get(k)), None)
    return f"{args};IP_POOL={pool}" if pool else args


def run_cni(lab: str, pod: Pod, command: str, cni_args: str | None = None) -> tuple[int, dict[str, Any]]:
    """Execute the CNI plugin for ``pod`` as a runtime does; returns (exit status, JSON output).
    ``cni_args`` defaults to the pod's name and namespace (a kubelet adds its UID and sandbox)."""
    pod_ns = st.ns_name(lab, pod.name)
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id(lab, pod.name),
        "CNI_NETNS": str(netns.NETNS_DIR / pod_ns),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(cni_bin_dir(lab)),
        "CNI_ARGS": cni_args or runtime_args(pod),
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    res = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(lab, pod.node), cni_binary(lab)],
        input=json.dumps(netconf(lab, pod.node, dict(pod.labels))),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    try:
        out = json.loads(res.stdout) if res.stdout.strip() else {}
    except json.JSONDecodeError:
        out = {"msg": res.stdout.strip(), "details": res.stderr.strip()}
    return res.returncode, out


def ensure_pod(topo: Topology, state: st.LabState, pod: Pod) -> int:
    """Pod namespace + CNI ADD, unless CNI CHECK says the pod is already wired."""
    pod_ns = st.ns_name(topo.name, pod.name)
    pods = state.info.setdefault("podIPs", {})
    if netns.exists(pod_ns) and pod.name in pods:
        code, _ = run_cni(topo.name, pod, "CHECK")
        if code == 0:
            return 0
    state.add_namespace(pod_ns)
    netns.create(pod_ns)
    kubelet_args = _as_kubelet(topo, pod)
    code, out = run_cni(topo.name, pod, "ADD", kubelet_args)
    if code != 0:
        raise ClusterError(
            f"CNI ADD of pod {pod.name} on {pod.node} failed (code {out.get('code')}): {out.get('msg')} "
            f"{out.get('details', '')}".strip()
        )
    ips = [ip["address"].split("/")[0] for ip in out.get("ips", [])]
    pods[pod.name] = {"node": pod.node, "ips": ips, "namespace": pod.namespace}
    state.save()
    if kubelet_args is not None:
        with _kube_admin(topo.name) as client:
            kubelet.report_pod_ips(client, pod.namespace, pod.name, ips)
    return 1


@contextlib.contextmanager
def _kube_admin(lab: str) -> Iterator[Client]:
    client = connect(kubeapi.kubeconfig_path(lab))
    try:
        yield client
    finally:
        client.close()


def _as_kubelet(topo: Topology, pod: Pod) -> str | None:
    """With an API server, the kubelet's part before a sandbox's ADD: the namespace (with its
    labels from ``namespaces:``) and the Pod object, bound to the node; returns the kubelet's
    CNI_ARGS (None without an API server)."""
    if not kubeapi.wanted(topo):
        return None
    declared = {n.name: n for n in topo.namespaces}
    ns = declared.get(pod.namespace)
    with _kube_admin(topo.name) as client:
        kubelet.ensure_namespace(
            client, pod.namespace, ns.labels if ns else None, ns.annotations if ns else None
        )
        uid = kubelet.register_pod(client, pod.namespace, pod.name, pod.node, pod.labels, pod.annotations)
    return kubelet.cni_args(pod.namespace, pod.name, container_id(topo.name, pod.name), uid)


def delete_pods(lab: str, state: st.LabState) -> None:
    """CNI DEL of every pod the lab wired, while its agent runs (teardown removes the rest)."""
    for name, info in list(state.info.get("podIPs", {}).items()):
        rec = state.process(f"agent-{info['node']}")
        if rec is not None and rec.running():
            run_cni(lab, Pod(name, info["node"]), "DEL")
