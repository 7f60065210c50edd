"""Real Kubernetes nodes in the lab: kubelet and containerd on the nodes ``controlPlane.kubelet``
names, kube-scheduler and the workload controllers on the control plane.

Each real node is one process tree started as ``nsenter --net=<node ns> unshare --mount
--propagation slave -- sh <node>/node.sh``: inside its own mount namespace the node gets its own
``/var/lib``, ``/var/log``, ``/run`` (its lab directory bound back in) and ``/opt``, an overlay of
its own changes over the machine's ``/etc``, and files holding the values kubelet wants over the
machine-wide sysctls it would otherwise write (``vm.overcommit_memory``, ``vm.panic_on_oom``,
``kernel.panic``, ``kernel.panic_on_oops``), so the machine's own /etc, /opt, /var, /run and
/proc/sys stay as they were and a DaemonSet's hostPath lands in the node. (Not ``ip netns
exec``: it remounts /sys and the cgroup mounts are lost.) containerd's CRI wires pods with the
plugin in the node's /opt/cni/bin and the conflist in its /etc/cni/net.d: the lab's own
(``controlPlane.podnet: lab``) or what podnet's DaemonSet installs (``podnet.lab.kubeinstall``).
kubelet runs with the cgroupfs driver under a cgroup root named after the lab and node, the
node's daemons in a sibling ``-system`` cgroup, so ``lab down`` finds every process of the node
there, pods included (their containers live in network namespaces of their own), kills them and
removes the cgroups.

The images pods run (``podnet.lab/pause``, ``podnet.lab/busybox:1``, and ``podnet:<version>``
for the DaemonSet) are made locally (``podnet.lab.images``, ``podnet.lab.podnetimage``) and
imported into each node's containerd when it starts: nothing is pulled. The rendering functions
are pure; ``ensure_*`` do the work and are idempotent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from podnet.lab import images, kubeapi, pki
from podnet.lab import state as st
from podnet.lab.build import LabError
from podnet.lab.topology import Host, Topology
from podnet.store.client import TlsFiles
from podnet.util import proc

CGROUP_FS = Path("/sys/fs/cgroup")
SCHEDULER = "kube-scheduler"
CONTROLLERS = "kube-controllers"  # a second controller-manager: the controllers real pods need
WORKLOAD_CONTROLLERS = (
    "deployment", "replicaset", "daemonset", "garbagecollector", "nodelifecycle", "serviceaccount",
    "serviceaccount-token",
)  # fmt: skip
SYSCTL_SHIMS = {  # what kubelet 1.20 sets machine-wide when it starts, with the values it wants
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
}
READY_TIMEOUT = 180.0


class KubeNodeError(LabError):
    """A real node could not be started; the message names the node, the log and what to do."""


@dataclass(frozen=True)
class NodePaths:
    """Where one real node keeps everything (under the lab's directory)."""

    root: Path

    @classmethod
    def of(cls, lab: str, node: str) -> NodePaths:
        return cls(st.lab_dir(lab) / "kubenodes" / node)

    @property
    def var_lib(self) -> Path:
        return self.root / "var-lib"

    @property
    def var_log(self) -> Path:
        return self.root / "var-log"

    @property
    def run(self) -> Path:
        return self.root / "run"  # the node's /run

    @property
    def opt(self) -> Path:
        return self.root / "opt"  # the node's /opt (/opt/cni/bin)

    @property
    def etc_upper(self) -> Path:
        return self.root / "etc" / "upper"  # the node's changes to /etc (/etc/cni/net.d)

    @property
    def etc_work(self) -> Path:
        return self.root / "etc" / "work"

    @property
    def etc_keep(self) -> Path:
        return self.root / "etc" / "keep"  # the machine's mounts inside /etc, carried over

    @property
    def sysctl(self) -> Path:
        return self.root / "sysctl"

    @property
    def cni_bin(self) -> Path:
        return self.opt / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.etc_upper / "cni" / "net.d"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def agent_socket(self) -> Path:
        """Where the agent of podnet's DaemonSet listens (its hostPath /var/run/podnet)."""
        return self.run / "podnet" / "agent.sock"


def cgroup_name(lab: str, node: str) -> str:
    """The node's cgroup root (kubelet's ``cgroupRoot``): named after the lab and the node."""
    return f"{st.NS_PREFIX}{lab}-{node}"


def containerd_bin() -> Path:
    """The directory of containerd unpacked by scripts/runtime-tools.sh (the newest)."""
    cache = Path(os.environ.get("PODNET_CACHE", "/var/cache/podnet"))
    for d in sorted(cache.glob("containerd-*"), reverse=True):
        if os.access(d / "usr" / "bin" / "containerd", os.X_OK):
            return d / "usr" / "bin"
    raise KubeNodeError(
        f"containerd is not unpacked under {cache}: run `bash scripts/runtime-tools.sh` (it unpacks Debian's "
        "containerd there without installing it)"
    )


# ---- what each node runs (pure) -------------------------------------------------------------------


def containerd_config(p: NodePaths, pause: str, runc: str) -> str:
    """containerd 1.6's configuration: CRI with the usual CNI dirs (the node's own /opt and /etc),
    runc with cgroupfs, root and state in the node's own /var/lib and /run."""
    return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
"""


def kubelet_config(p: NodePaths, address: str, cgroup_root: str, client_ca: str) -> str:
    """KubeletConfiguration: serving on the node's underlay address, x509 clients of the lab's CA,
    cgroupfs under ``cgroup_root``, kernel defaults left alone, no volume plugin dir on the host."""
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": client_ca}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "clusterDomain": "cluster.local",
        "resolvConf": str(p.root / "resolv.conf"),  # empty: the lab has no DNS, pods ask no one
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "maxPods": 30,
        "volumePluginDir": str(p.root / "volume-plugins"),
    }  # fmt: skip
    return json.dumps(doc, indent=2) + "\n"  # YAML is a superset of JSON


def conflist(agent_socket: Path) -> str:
    """The CNI configuration list containerd reads: podnet, talking to the node's agent."""
    doc = {"cniVersion": "1.0.0", "name": "podnet",
           "plugins": [{"type": "podnet", "agentSocket": str(agent_socket)}]}  # fmt: skip
    return json.dumps(doc, indent=2) + "\n"


def etc_submounts(mountinfo: str, under: str = "/etc") -> list[str]:
    """Mount points strictly inside ``under`` (a container's /etc/resolv.conf, /etc/hosts), from
    ``/proc/self/mountinfo`` (pure): an overlay over ``under`` would hide them."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point.startswith(under + "/") and point not in found:
                found.append(point)
    return found


def node_script(p: NodePaths, cgroups: Sequence[Path], ctrd: Path, kubelet: Sequence[str],
                image_tars: Sequence[Path], keep: Sequence[Path] = (),
                etc_mounts: Sequence[str] = ()) -> str:  # fmt: skip
    """What runs inside the node's network namespace and its own mount namespace: the node gets
    its own /var/lib, /var/log, /run and /opt (directories of the lab) and an /etc that is the
    machine's with the node's changes on top (overlay), so a DaemonSet's hostPath such as
    /etc/cni/net.d or /opt/cni/bin lands in the node, never on the machine. ``keep``: paths under
    /run the node still needs to see (its own directory, the lab's CNI files)."""
    q = shlex.quote
    lines = [
        "set -eu",
        "# this shell, containerd, its shims and kubelet: the node's -system cgroup in every hierarchy",
        *(f"echo $$ > {q(str(c / 'cgroup.procs'))}" for c in cgroups),
        f"mount --bind {q(str(p.var_lib))} /var/lib",
        f"mount --bind {q(str(p.var_log))} /var/log",
        *(f"mount --bind {q(str(p.sysctl / k.replace('/', '.')))} /proc/sys/{k}" for k in SYSCTL_SHIMS),
        *(f"mount --bind {q(str(k))} {q(str(p.run / k.relative_to('/run')))}" for k in keep),
        f"mount --rbind {q(str(p.run))} /run",
        f"mount --bind {q(str(p.opt))} /opt",
        *(f"mount --bind {q(m)} {q(str(p.etc_keep / str(i)))}" for i, m in enumerate(etc_mounts)),
        f"mount -t overlay podnet-lab-etc -o lowerdir=/etc,upperdir={q(str(p.etc_upper))},"
        f"workdir={q(str(p.etc_work))} /etc",
        *(f"mount --bind {q(str(p.etc_keep / str(i)))} {q(m)}" for i, m in enumerate(etc_mounts)),
        f"export PATH={q(str(ctrd))}:/usr/sbin:/usr/bin:/sbin:/bin",
        f"containerd --config {q(str(p.root / 'containerd.toml'))} "
        f">> {q(str(p.logs / 'containerd.log'))} 2>&1 &",
        "for _ in $(seq 200); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.05; done",
        *(f"ctr -n k8s.io images import {q(str(t))} >/dev/null" for t in image_tars),
        "# kubelet supervised as systemd would (Restart=always): a kubelet killed -9 comes back and finds",
        "# its pods in containerd; this shell stays the node's recorded process",
        "while :; do",
        f"  {' '.join(q(a) for a in kubelet)} >> {q(str(p.logs / 'kubelet.log'))} 2>&1 || true",
        f"  echo \"$(date -Is) kubelet exited: restarting it\" >> {q(str(p.logs / 'kubelet.log'))}",
        "  sleep 1",
        "done",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def kubelet_argv(p: NodePaths, node: str, address: str, kubeconfig: Path, pause: str) -> list[str]:
    return [
        str(kubeapi.binary("kubelet")), f"--kubeconfig={kubeconfig}", f"--config={p.root / 'kubelet.yaml'}",
        "--container-runtime=remote", "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--runtime-request-timeout=2m", "--root-dir=/var/lib/kubelet", "--cert-dir=/var/lib/kubelet/pki",
        f"--hostname-override={node}", f"--node-ip={address}", f"--pod-infra-container-image={pause}",
        "--v=1",
    ]  # fmt: skip


# ---- starting them ----------------------------------------------------------------------------------


def wanted(topo: Topology) -> tuple[Host, ...]:
    return tuple(h for h in topo.nodes if h.name in topo.real_kubelets)


def check(topo: Topology) -> None:
    """Real kubelets need the Kubernetes datastore, and the lab makes no pods on their nodes (the
    kubelet would start a second sandbox for each): fails with what to change."""
    if wanted(topo) and not kubeapi.on_kubernetes(topo):
        raise KubeNodeError(
            "controlPlane.kubelet: real kubelets register with the API server: set cluster.datastore: "
            "kubernetes (or --set datastore=kubernetes)"
        )
    mixed = sorted(p.name for p in topo.pods if p.node in topo.real_kubelets)
    if mixed:
        raise KubeNodeError(
            f"pods: {', '.join(mixed)} are on nodes with a real kubelet, which runs its own pods: create "
            "them with kubectl there, or put them on a node the lab plays kubelet for"
        )


def _cgroup_dirs(name: str) -> list[Path]:
    """``name`` in every cgroup v1 hierarchy (and the unified one when mounted)."""
    found = []
    for h in sorted(CGROUP_FS.iterdir()):
        if (h / "cgroup.procs").exists() and not h.is_symlink():
            found.append(h / name)
    return found


def _make_cgroups(state: st.LabState, name: str) -> list[Path]:
    made = _cgroup_dirs(name)
    recorded = list(state.info.get("cgroups") or [])
    for d in made:
        if str(d) not in recorded:
            recorded.append(str(d))
    state.info["cgroups"] = recorded
    state.save()  # recorded before it exists: lab down removes it even if this fails half-way
    for d in made:
        d.mkdir(exist_ok=True)
        if (d.parent / "cpuset.cpus").exists():  # a new cpuset has none until told
            for key in ("cpuset.cpus", "cpuset.mems"):
                if not (d / key).read_text().strip():
                    (d / key).write_text((d.parent / key).read_text())
    return made


def _under_run(path: Path) -> bool:
    return path.is_relative_to("/run")


def _node_files(topo: Topology, host: Host, p: NodePaths) -> list[Path]:
    """Write what the node reads (its directories, the CNI dirs' contents the lab provides, the
    sysctl shims, the configurations); returns the paths under /run the node must still see."""
    from podnet.lab.cluster import agent_socket, cni_bin_dir, cni_binary, node_dir

    lab = topo.name
    for d in (p.var_lib, p.var_log, p.run, p.opt, p.etc_upper, p.etc_work, p.etc_keep, p.sysctl, p.cni_bin,
              p.logs, p.root / "volume-plugins"):  # fmt: skip
        d.mkdir(parents=True, exist_ok=True)
    for key, value in SYSCTL_SHIMS.items():
        (p.sysctl / key.replace("/", ".")).write_text(value + "\n")
    (p.root / "resolv.conf").write_text("")
    links = {"loopback": Path("/usr/lib/cni/loopback")}  # what a Kubernetes node has (kubernetes-cni)
    keep = [p.root]
    if topo.podnet_install == "lab":  # the lab's plugin and conflist; else the DaemonSet installs them
        links["podnet"] = Path(cni_binary(lab))
        p.cni_conf.mkdir(parents=True, exist_ok=True)
        (p.cni_conf / "05-podnet.conflist").write_text(conflist(agent_socket(lab, host.name)))
        keep += [node_dir(lab, host.name), cni_bin_dir(lab)]
    else:  # lab commands reach the DaemonSet's agent where the lab's own would listen
        sock = agent_socket(lab, host.name)
        sock.parent.mkdir(parents=True, exist_ok=True)
        if not sock.is_symlink():
            sock.unlink(missing_ok=True)
            sock.symlink_to(p.agent_socket)
    for link, target in links.items():
        dest = p.cni_bin / link
        if not dest.is_symlink():
            dest.symlink_to(target)
    keep = [k for k in keep if _under_run(k)]
    for k in keep:
        k.mkdir(parents=True, exist_ok=True)
        (p.run / k.relative_to("/run")).mkdir(parents=True, exist_ok=True)
    return keep


def _etc_mounts(p: NodePaths) -> list[str]:
    """The machine's mounts inside /etc, with a mount point of the same kind to carry each over."""
    mounts = etc_submounts(Path("/proc/self/mountinfo").read_text())
    for i, m in enumerate(mounts):
        spot = p.etc_keep / str(i)
        if Path(m).is_dir():
            spot.mkdir(exist_ok=True)
        elif not spot.exists():
            spot.touch()
    return mounts


def _node_credentials(p: NodePaths, tls: TlsFiles) -> TlsFiles:
    """The node's own certificate, key and the CA, copied into the node's directory: all the node
    sees of the lab's PKI (no CA key, no other node's key)."""
    d = p.root / "pki"
    d.mkdir(mode=0o700, exist_ok=True)
    copied = []
    for src, name in ((tls.ca, "ca.crt"), (tls.cert, "kubelet.crt"), (tls.key, "kubelet.key")):
        dest = d / name
        dest.write_bytes(Path(src).read_bytes())
        os.chmod(dest, 0o600 if name.endswith(".key") else 0o644)
        copied.append(str(dest))
    return dataclasses.replace(tls, ca=copied[0], cert=copied[1], key=copied[2])


def ensure_real_node(topo: Topology, state: st.LabState, host: Host) -> int:
    """Start containerd + kubelet on ``host`` unless they run; returns 1 when started."""
    name = f"kubenode-{host.name}"
    rec = state.process(name)
    if rec is not None and rec.running():
        return 0
    root = cgroup_name(topo.name, host.name)
    if rec is not None:  # its kubelet ended: what is left of its daemons goes before they start again
        remove_cgroups([str(d) for d in _cgroup_dirs(f"{root}-system")])

    lab, p = topo.name, NodePaths.of(topo.name, host.name)
    keep = _node_files(topo, host, p)
    pause = images.pause_image(kubeapi.binary("pause"))
    tars = [pause.path, images.busybox_image().path]
    if topo.podnet_install != "lab":  # what a registry would serve: podnet's image, built here
        from podnet.lab import podnetimage

        tars.append(podnetimage.ensure().path)
    (p.root / "containerd.toml").write_text(containerd_config(p, pause.name, "/usr/sbin/runc"))
    tls = _node_credentials(p, pki.ensure_cert(lab, f"system:node:{host.name}", org="system:nodes"))
    kubeconfig = p.root / "kubelet.kubeconfig"
    user = {"client-certificate": tls.cert, "client-key": tls.key}
    kubeconfig.write_text(kubeapi.kubeconfig(kubeapi.server_url(topo), tls.ca, user))
    os.chmod(kubeconfig, 0o600)
    address = str(host.primary.ip)
    (p.root / "kubelet.yaml").write_text(kubelet_config(p, address, root, tls.ca))
    _make_cgroups(state, root)
    system = _make_cgroups(state, f"{root}-system")
    ensure_kube_service(topo, host)
    argv = kubelet_argv(p, host.name, address, kubeconfig, pause.name)
    script = p.root / "node.sh"
    script.write_text(node_script(p, system, containerd_bin(), argv, tars, keep, _etc_mounts(p)))
    ns = st.ns_name(lab, host.name)
    outer = ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--mount", "--propagation", "slave", "--",
             "sh", str(script)]  # fmt: skip
    log = p.logs / "node.log"
    child = proc.spawn(outer, None, log)
    # recorded as what runs once nsenter and unshare have exec'd: the node's shell
    state.add_process(st.ProcessRecord(name, child.pid, ns, ["sh", str(script)], str(log)))
    state.save()
    return 1


def node_file(lab: str, node: str, path: str, text: str | None) -> None:
    """Write (``text``) or remove (None) ``path`` as the real node sees it, inside its mount
    namespace (its /etc is an overlay: the lab never writes under a mounted overlay itself)."""
    import subprocess

    state = st.LabState.load(lab)
    rec = state.process(f"kubenode-{node}") if state is not None else None
    if rec is None or not rec.running():
        raise KubeNodeError(f"{node} of lab {lab} runs no real kubelet: is the lab up?")
    script = f"cat > {shlex.quote(path)}" if text is not None else f"rm -f {shlex.quote(path)}"
    subprocess.run(["nsenter", f"--mount=/proc/{rec.pid}/ns/mnt", "sh", "-c", script], input=text or "",
                   text=True, check=True, capture_output=True)  # fmt: skip


KUBE_SERVICE_TABLE = "podnet_lab_kube_service"


def kube_service_rules(service_ip: str, apiserver: str, port: int) -> str:
    """nft: the ``kubernetes`` Service's ClusterIP:443 to the API server, for the node and its pods
    (what kube-proxy does for that one Service; the lab runs no kube-proxy) (pure)."""
    return f"""table ip {KUBE_SERVICE_TABLE}
delete table ip {KUBE_SERVICE_TABLE}
table ip {KUBE_SERVICE_TABLE} {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {service_ip} tcp dport 443 dnat to {apiserver}:{port}
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    ip daddr {service_ip} tcp dport 443 dnat to {apiserver}:{port}
  }}
}}
"""


def ensure_kube_service(topo: Topology, host: Host) -> None:
    """In the node's namespace: in-cluster clients (podnet's DaemonSet and operator use their
    service accounts) reach the API server at the ``kubernetes`` Service's address."""
    import subprocess

    cp = topo.control_plane.primary.ip
    if cp.version != 4:
        return  # the lab's Service CIDR is IPv4
    rules = kube_service_rules(kubeapi.SERVICE_IP, str(cp), kubeapi.APISERVER_PORT)
    ns = st.ns_name(topo.name, host.name)
    res = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, capture_output=True,
                         text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        raise KubeNodeError(f"{host.name}: cannot add the kubernetes Service's address: {res.stderr.strip()}")


def ensure_workload_control(topo: Topology, state: st.LabState) -> int:
    """kube-scheduler and a controller-manager with the controllers real pods need, in the
    control-plane host's namespace; returns how many started."""
    lab, ns = topo.name, st.ns_name(topo.name, topo.control_plane.name)
    admin = pki.ensure_cert(lab, "kube-admin", org="system:masters")
    config = kubeapi.kube_dir(lab) / "workloads.kubeconfig"
    user = {"client-certificate": admin.cert, "client-key": admin.key}
    config.write_text(kubeapi.kubeconfig(kubeapi.server_url(topo), admin.ca, user))
    os.chmod(config, 0o600)
    sa_key, _ = pki.ensure_signing_key(lab, "service-accounts")
    wanted_procs = {
        SCHEDULER: [str(kubeapi.binary("kube-scheduler")), f"--kubeconfig={config}", "--leader-elect=false",
                    "--port=0", "--secure-port=0"],
        CONTROLLERS: [str(kubeapi.binary("kube-controller-manager")), f"--kubeconfig={config}",
                      f"--controllers={','.join(WORKLOAD_CONTROLLERS)}",
                      f"--service-account-private-key-file={sa_key}", f"--root-ca-file={admin.ca}",
                      "--use-service-account-credentials=false", "--leader-elect=false", "--port=0",
                      "--secure-port=0",
                      # the nodes the lab plays kubelet for never report Ready: their pods stay
                      "--enable-taint-manager=false", "--pod-eviction-timeout=87600h"],
    }  # fmt: skip
    started = 0
    for name, argv in wanted_procs.items():
        rec = state.process(name)
        if rec is not None and rec.running():
            continue
        log = st.lab_dir(lab) / "logs" / f"{name}.log"
        child = proc.spawn(argv, ns, log)
        state.add_process(st.ProcessRecord(name, child.pid, ns, [argv[0]], str(log)))
        started += 1
    state.save()
    return started


def wait_ready(topo: Topology, timeout: float = READY_TIMEOUT, registered: bool = False) -> None:
    """Until every real node's Node is Ready (kubelet registered, containerd answered, the CNI
    configuration found), or with ``registered`` until its kubelet reports at all (a node that
    waits for podnet's DaemonSet is NotReady); the error names the node and its kubelet log."""
    from lightkube.resources.core_v1 import Node

    from podnet.kube.client import connect

    pending = {h.name for h in wanted(topo)}
    deadline = time.monotonic() + timeout
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        while pending:
            for name in sorted(pending):
                with contextlib.suppress(Exception):
                    node = client.get(Node, name)
                    conditions = (node.status.conditions or []) if node.status else []
                    if any(c.type == "Ready" and (registered or c.status == "True") for c in conditions):
                        pending.discard(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(
                    str(NodePaths.of(topo.name, n).logs / "kubelet.log") for n in sorted(pending)
                )
                what = "reporting" if registered else "Ready"
                raise KubeNodeError(
                    f"real node(s) {', '.join(sorted(pending))} not {what} after {timeout:.0f}s: see {logs}"
                )
            time.sleep(1.0)
    finally:
        client.close()


# ---- removing them ----------------------------------------------------------------------------------


def remove_cgroups(paths: Sequence[str], grace: float = 5.0) -> list[int]:
    """Kill every process in the cgroups ``paths`` and below (pods' containers are in network
    namespaces of their own: only their cgroup finds them), then remove the cgroups, deepest
    first; returns the PIDs killed."""
    killed: list[int] = []
    deadline = time.monotonic() + grace
    while True:
        pids = sorted({pid for path in paths for pid in _procs_below(Path(path))})
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.extend(p for p in pids if p not in killed)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for path in paths:
        for d in _dirs_deepest_first(Path(path)):
            with contextlib.suppress(OSError):
                d.rmdir()
    return killed


def _dirs_deepest_first(root: Path) -> list[Path]:
    """``root`` and every directory below it, children before parents. Kubelet and containerd may
    remove a pod's cgroup while this walks: a directory that vanishes is skipped (os.walk ignores
    the scandir errors that pathlib's rglob raises)."""
    return [Path(top) for top, _dirs, _files in os.walk(root, topdown=False)]


def _procs_below(root: Path) -> set[int]:
    found: set[int] = set()
    for procs in (d / "cgroup.procs" for d in _dirs_deepest_first(root)):
        with contextlib.suppress(OSError, ValueError):
            found.update(int(x) for x in procs.read_text().split())
    return found


# ---- real pods as lab hosts (for status, connectivity, diagnose) ----------------------------------


def _pod_pid(lab: str, node: str, uid: str) -> int | None:
    """The sandbox (``/pause``) process of pod ``uid`` on ``node``, found in its cgroup under the
    node's kubepods. Only pause: a container's process may still be runc's init, outside the pod's
    network namespace."""
    base = CGROUP_FS / "pids" / cgroup_name(lab, node)
    containers = (d for d in _dirs_deepest_first(base) if d.parent.name == f"pod{uid}")
    for procs in (d / "cgroup.procs" for d in containers):
        with contextlib.suppress(OSError, ValueError):
            for pid in (int(x) for x in procs.read_text().split()):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"/pause":
                    return pid
    return None


def _same_netns(a: str, b: str) -> bool:
    try:
        return os.stat(a).st_ino == os.stat(b).st_ino
    except OSError:
        return False


def pod_host(namespace: str, name: str) -> str:
    """The lab host name of a real pod: its name, prefixed by its namespace outside ``default``."""
    return name if namespace == "default" else f"{namespace}.{name}"


def attach_real_pods(topo: Topology, state: st.LabState) -> dict[str, dict[str, object]]:
    """The running pods of the real nodes, each as a lab host: its network namespace named
    ``pn-<lab>-<pod>`` (``ip netns attach`` to one of its processes, so the verification commands
    enter it like any lab pod); names of pods that are gone are detached. ``{pod: {"node", "ips",
    "namespace", "real"}}``."""
    import subprocess

    from lightkube.resources.core_v1 import Pod

    from podnet.kube.client import connect
    from podnet.util import netns

    real = set(topo.real_kubelets)
    found: dict[str, dict[str, object]] = {}
    client = connect(kubeapi.kubeconfig_path(topo.name))
    try:
        pods = list(client.list(Pod, namespace="*"))
    finally:
        client.close()
    for pod in pods:
        node = pod.spec.nodeName if pod.spec else None
        status = pod.status
        if node not in real or status is None or status.phase != "Running" or not status.podIPs:
            continue
        if pod.spec is not None and pod.spec.hostNetwork:
            continue
        pid = _pod_pid(topo.name, str(node), str(pod.metadata.uid))
        if pid is None:
            continue
        host = pod_host(str(pod.metadata.namespace), str(pod.metadata.name))
        name = st.ns_name(topo.name, host)
        if netns.exists(name) and not _same_netns(f"/run/netns/{name}", f"/proc/{pid}/ns/net"):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)  # stale
        if not netns.exists(name):
            if name not in state.namespaces:
                state.namespaces.append(name)  # lab down removes it with the others
                state.save()
            subprocess.run(["ip", "netns", "attach", name, str(pid)], capture_output=True, check=False)
        ips = [p.ip for p in status.podIPs]
        found[host] = {"node": node, "ips": ips, "namespace": pod.metadata.namespace, "real": True}
    for host in state.info.get("realPods") or []:
        if host not in found:  # the pod is gone: only its name is left (nothing runs inside)
            name = st.ns_name(topo.name, host)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
            if name in state.namespaces:
                state.namespaces.remove(name)
    state.info["realPods"] = sorted(found)
    state.save()
    return found
