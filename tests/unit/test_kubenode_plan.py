"""Pure: what a real lab node runs (containerd and kubelet configuration, the node's script),
``controlPlane.kubelet`` in a topology, and the locally made images."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from podnet.lab import images, kubenode
from podnet.lab.topology import Topology, TopologyError, load_topology, parse_topology

P = kubenode.NodePaths(Path("/run/podnet/labs/x/kubenodes/node1"))


def test_containerd_keeps_everything_on_the_nodes_own_paths() -> None:
    text = kubenode.containerd_config(P, "podnet.lab/pause:v1.20.2", "/usr/sbin/runc")
    assert 'root = "/var/lib/containerd"' in text and 'state = "/run/containerd"' in text
    # the usual CNI dirs: a DaemonSet's hostPaths; they are the node's own (its /opt, its /etc overlay)
    assert 'bin_dir = "/opt/cni/bin"' in text and 'conf_dir = "/etc/cni/net.d"' in text
    assert 'sandbox_image = "podnet.lab/pause:v1.20.2"' in text and "SystemdCgroup = false" in text


def test_kubelet_leaves_the_machine_alone() -> None:
    doc = json.loads(kubenode.kubelet_config(P, "172.16.2.2", "pn-x-node1", "/ca.crt"))
    assert doc["cgroupRoot"] == "/pn-x-node1" and doc["cgroupDriver"] == "cgroupfs"
    assert doc["protectKernelDefaults"] is False and doc["volumePluginDir"].startswith(str(P.root))
    assert doc["address"] == "172.16.2.2" and doc["authentication"]["anonymous"]["enabled"] is False


def test_the_node_script_binds_before_anything_starts() -> None:
    script = kubenode.node_script(
        P, [Path("/sys/fs/cgroup/pids/pn-x-node1-system")], Path("/c/usr/bin"), ["kubelet", "--v=1"],
        [Path("/i/pause.tar")], [P.root], ["/etc/resolv.conf"],
    )  # fmt: skip
    lines = script.splitlines()
    first_start = next(i for i, line in enumerate(lines) if line.startswith("containerd "))
    binds = [i for i, line in enumerate(lines) if line.startswith("mount ")]
    assert binds and max(binds) < first_start  # kubelet never sees the machine's /proc/sys, /etc, /run
    run = lines.index(f"mount --rbind {P.run} /run")
    keep = lines.index(f"mount --bind {P.root} {P.run}/podnet/labs/x/kubenodes/node1")
    assert keep < run  # the node's own directory stays visible under its new /run
    overlay = next(i for i, line in enumerate(lines) if line.startswith("mount -t overlay"))
    assert f"lowerdir=/etc,upperdir={P.etc_upper},workdir={P.etc_work} /etc" in lines[overlay]
    # a mount inside the machine's /etc (a container's resolv.conf) is carried over the overlay
    assert lines.index(f"mount --bind /etc/resolv.conf {P.etc_keep}/0") < overlay
    assert lines.index(f"mount --bind {P.etc_keep}/0 /etc/resolv.conf") > overlay
    assert lines.index("echo $$ > /sys/fs/cgroup/pids/pn-x-node1-system/cgroup.procs") < min(binds)
    for key in kubenode.SYSCTL_SHIMS:
        assert any(line.endswith(f" /proc/sys/{key}") for line in lines)
    assert lines[-5] == "while :; do" and lines[-4].startswith("  kubelet --v=1 >>")  # supervised


def test_etc_submounts_are_those_strictly_inside() -> None:
    info = (
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "30 22 254:0 /x /etc/resolv.conf rw - ext4 /dev/vda rw\n"
        "31 22 254:0 /y /etc/my\\040hosts rw - ext4 /dev/vda rw\n"
        "32 22 0:5 / /etcetera rw - tmpfs t rw\n"
        "33 22 0:6 / /etc rw - tmpfs t rw\n"
    )
    assert kubenode.etc_submounts(info) == ["/etc/resolv.conf", "/etc/my hosts"]


def test_the_kubernetes_service_goes_to_the_api_server_for_node_and_pods() -> None:
    rules = kubenode.kube_service_rules("10.96.0.1", "172.16.2.254", 6443)
    assert rules.count("ip daddr 10.96.0.1 tcp dport 443 dnat to 172.16.2.254:6443") == 2
    assert "hook output" in rules and "hook prerouting" in rules
    assert rules.startswith(f"table ip {kubenode.KUBE_SERVICE_TABLE}\ndelete table")  # idempotent


def test_conflist_names_the_nodes_agent() -> None:
    doc = json.loads(kubenode.conflist(Path("/run/podnet/labs/x/nodes/node1/agent.sock")))
    assert doc["plugins"] == [{"type": "podnet", "agentSocket": "/run/podnet/labs/x/nodes/node1/agent.sock"}]


def test_controlplane_kubelet_names_real_nodes() -> None:
    assert load_topology("real-nodes").real_kubelets == ("node1", "node2")
    assert load_topology("two-subnets").real_kubelets == ()
    raw = load_topology("l2").source
    text = Path(raw).read_text()
    assert parse_topology_text(text + "controlPlane: {kubelet: real}\n").real_kubelets == (
        "node1",
        "node2",
        "node3",
    )
    with pytest.raises(TopologyError, match="node9 is no node"):
        parse_topology_text(text + "controlPlane: {kubelet: [node9]}\n")
    with pytest.raises(TopologyError, match="is not `lab`, `real`"):
        parse_topology_text(text + "controlPlane: {kubelet: yes}\n")


def parse_topology_text(text: str) -> Topology:
    return parse_topology(yaml.safe_load(text))


def test_real_kubelets_need_the_kubernetes_datastore_and_no_lab_pods() -> None:
    topo = load_topology("real-nodes")
    kubenode.check(topo)
    with pytest.raises(kubenode.KubeNodeError, match="datastore: kubernetes"):
        kubenode.check(dataclasses.replace(topo, cluster={**topo.cluster, "datastore": "etcd"}))
    with pytest.raises(kubenode.KubeNodeError, match="pod3 are on nodes with a real kubelet"):
        kubenode.check(dataclasses.replace(topo, real_kubelets=("node1", "node2", "node3")))


def test_images_are_reproducible_docker_archives() -> None:
    layer = images.layer({"bin/busybox": b"x", "etc/passwd": b"root"}, ("bin", "etc"), {"bin/sh": "busybox"})
    assert layer == images.layer(
        {"etc/passwd": b"root", "bin/busybox": b"x"}, ("etc", "bin"), {"bin/sh": "busybox"}
    )
    data = images.archive("podnet.lab/busybox:1", layer, {"Cmd": ["sh"]})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        (entry,) = manifest
        assert entry["RepoTags"] == ["podnet.lab/busybox:1"]
        config = json.load(tar.extractfile(entry["Config"]))  # type: ignore[arg-type]
        got = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(got).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(got)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].mode == 0o755 and members["bin/sh"].linkname == "busybox"
