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
    assert f'bin_dir = "{P.cni_bin}"' in text and f'conf_dir = "{P.cni_conf}"' in text
    assert 'sandbox_image = "podnet.lab/pause:v1.20.2"' in text and "SystemdCgroup = false" in text


def test_kubelet_leaves_the_machine_alone() -> None:
    doc = json.loads(kubenode.kubelet_config(P, "172.16.2.2", "pn-x-node1", "/ca.crt"))
    assert doc["cgroupRoot"] == "/pn-x-node1" and doc["cgroupDriver"] == "cgroupfs"
    assert doc["protectKernelDefaults"] is False and doc["volumePluginDir"].startswith(str(P.root))
    assert doc["address"] == "172.16.2.2" and doc["authentication"]["anonymous"]["enabled"] is False


def test_the_node_script_binds_before_anything_starts() -> None:
    script = kubenode.node_script(
        P, [Path("/sys/fs/cgroup/pids/pn-x-node1-system")], Path("/c/usr/bin"), ["kubelet", "--v=1"],
        [Path("/i/pause.tar")],
    )  # fmt: skip
    lines = script.splitlines()
    first_start = next(i for i, line in enumerate(lines) if line.startswith("containerd "))
    binds = [i for i, line in enumerate(lines) if line.startswith("mount --bind")]
    assert binds and max(binds) < first_start  # kubelet never sees the machine's /proc/sys
    assert lines.index("echo $$ > /sys/fs/cgroup/pids/pn-x-node1-system/cgroup.procs") < min(binds)
    for key in kubenode.SYSCTL_SHIMS:
        assert any(line.endswith(f" /proc/sys/{key}") for line in lines)
    assert lines[-5] == "while :; do" and lines[-4].startswith("  kubelet --v=1 >>")  # supervised


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
