"""Pure: installing podnet from deploy/kubernetes/ (the lab's ``controlPlane.podnet``), the
operator's --config, podnet's image inputs, and install-cni in a pod."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from podnet.cni import install
from podnet.config import load_config
from podnet.lab import kubeinstall, podnetimage
from podnet.lab.topology import TopologyError, load_topology, parse_topology
from podnet.operator.cli import apply_config, build_parser

MANIFEST = kubeinstall.kubeapi.MANIFESTS / "podnet.yaml"


def test_the_lab_fills_only_the_configmap_of_the_shipped_manifest() -> None:
    topo = load_topology("kube-install")
    shipped = [
        d for d in yaml.safe_load_all((kubeinstall.kubeapi.MANIFESTS / "podnet.yaml").read_text()) if d
    ]
    rendered = list(yaml.safe_load_all(kubeinstall.render(topo)))
    assert [(d["kind"], d["metadata"]["name"]) for d in rendered] == [
        (d["kind"], d["metadata"]["name"]) for d in shipped
    ]
    for mine, theirs in zip(rendered, shipped, strict=True):
        if mine["kind"] == "ConfigMap":
            cfg = yaml.safe_load(mine["data"]["config.yaml"])
            assert cfg["datastore"] == "kubernetes" and cfg["tunnelProtocol"] == "vxlan"
            assert "nodeName" not in cfg and "agentSocket" not in cfg  # each agent finds its own
            load_config(cfg, {"K8S_NODE_NAME": "node1"}, None)  # what the agents will load
        else:
            assert mine == theirs


def test_the_shipped_manifests_use_the_image_the_project_builds() -> None:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    specs = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("DaemonSet", "Deployment")]
    images = {c["image"] for s in specs for c in s["containers"] + s.get("initContainers", [])}
    assert images == {podnetimage.NAME}
    init = specs[0]["initContainers"][0]["command"]
    assert init[:2] == ["podnet", "install-cni"] and init[init.index("--plugin") + 1] == "compiled"
    operator = next(s for s in specs if s["containers"][0]["name"] == "operator")["containers"][0]
    assert "--config" in operator["command"]  # the pools come from the ConfigMap, not from flags


def test_a_daemonset_install_needs_every_node_real_and_cluster_wide_settings() -> None:
    topo = load_topology("kube-install")
    kubeinstall.check(topo)
    partial = dataclasses.replace(topo, real_kubelets=("node1",))
    with pytest.raises(kubeinstall.InstallError, match="node2 would get podnet's"):
        kubeinstall.check(partial)
    with pytest.raises(kubeinstall.InstallError, match=r"cluster\.bgp"):
        kubeinstall.check(dataclasses.replace(topo, cluster={**topo.cluster, "bgp": {"enabled": True}}))


def test_controlplane_podnet_is_lab_manifests_or_none() -> None:
    raw = yaml.safe_load(Path(load_topology("kube-install").source).read_text())
    assert parse_topology(raw).podnet_install == "manifests"
    raw["controlPlane"]["podnet"] = "helm"
    with pytest.raises(TopologyError, match=r"'helm' is not one of lab, manifests, none"):
        parse_topology(raw)


def _operator(argv: list[str], cfg: dict[str, object]) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    apply_config(args, argv, load_config(cfg, {}, None))
    return vars(args)


def test_operator_config_gives_what_the_flags_do_not() -> None:
    cfg = {"datastore": "kubernetes", "ipam": {"mode": "cluster-pool", "operator": {
        "clusterPoolIPv4PodCIDRList": ["10.244.0.0/16"], "clusterPoolIPv4MaskSize": 25}}}  # fmt: skip
    got = _operator(["--config", "x"], cfg)
    assert got["datastore"] == "kubernetes" and got["ipam"] == "cluster-pool"
    assert got["cluster_pool_ipv4_cidr"] == ["10.244.0.0/16"] and got["cluster_pool_ipv4_mask_size"] == 25
    flags = ["--config", "x", "--cluster-pool-ipv4-mask-size", "26", "--datastore=etcd"]
    got = _operator(flags, cfg)
    assert got["cluster_pool_ipv4_mask_size"] == 26 and got["datastore"] == "etcd"  # a flag wins


def test_operator_config_multi_pool_and_dual_stack() -> None:
    got = _operator(["--config", "x"], {"ipam": {"mode": "multi-pool", "operator": {
        "clusterPoolIPv4PodCIDRList": ["10.8.0.0/16"], "clusterPoolIPv4MaskSize": 24}}})  # fmt: skip
    assert got["ipam"] == "multi-pool"
    pools = json.loads(str(got["auto_create_pod_ip_pools"]))
    assert pools == {"default": {"ipv4": {"cidrs": ["10.8.0.0/16"], "maskSize": 24}}}
    got = _operator(["--config", "x"], {"ipv6": {"enabled": True}, "ipam": {"operator": {
        "clusterPoolIPv6PodCIDRList": ["fd10::/104"], "clusterPoolIPv6MaskSize": 112}}})  # fmt: skip
    assert got["cluster_pool_ipv6_cidr"] == ["fd10::/104"] and got["cluster_pool_ipv6_mask_size"] == 112


def test_install_cni_in_a_pod_never_writes_a_launcher_into_the_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("PODNET_PLUGIN_BINARY", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="inside the container's image"):
        install.install_cni(tmp_path / "bin", tmp_path / "conf", kind="auto")
    with pytest.raises(ValueError, match="inside the container's image"):
        install.install_cni(tmp_path / "bin", tmp_path / "conf", kind="python")
    assert not (tmp_path / "bin").exists() and not (tmp_path / "conf").exists()


def test_apt_simulation_is_read_as_name_and_version() -> None:
    text = (
        "NOTE: simulation\n"
        "Inst libc6 (2.36-9+deb12u10 Debian:12.11/stable [amd64])\n"
        "Inst python3.11-minimal (3.11.2-6+deb12u6 Debian:12.11/stable [amd64]) []\n"
        "Conf libc6 (2.36-9+deb12u10 Debian:12.11/stable [amd64])\n"
        "Inst netbase (6.4 Debian:12.11/stable [all])\n"
    )
    assert podnetimage.parse_simulation(text) == [
        "libc6=2.36-9+deb12u10", "python3.11-minimal=3.11.2-6+deb12u6", "netbase=6.4",
    ]  # fmt: skip


def test_the_image_digest_changes_with_any_input(tmp_path: Path) -> None:
    (tmp_path / "podnet").mkdir()
    src = tmp_path / "podnet" / "a.py"
    src.write_text("x = 1\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    files = podnetimage.source_files(tmp_path)
    one = podnetimage.inputs_digest(["libc6=1"], files, tmp_path, b"plugin")
    assert one == podnetimage.inputs_digest(["libc6=1"], files, tmp_path, b"plugin")
    assert one != podnetimage.inputs_digest(["libc6=2"], files, tmp_path, b"plugin")
    assert one != podnetimage.inputs_digest(["libc6=1"], files, tmp_path, b"plugin2")
    src.write_text("x = 2\n")
    assert one != podnetimage.inputs_digest(["libc6=1"], files, tmp_path, b"plugin")
