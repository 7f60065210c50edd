"""An IPAM mode with its own settings and operator, added from outside podnet (issue 30):
``tests/plugins/podnet_dummyrange.py`` is a spec, an allocator factory, a ``ModeSettings`` and a
``ModeOperator``, loaded by ``PODNET_PLUGINS``. A lab whose cluster chooses it on the command line
(``--set ipam.mode=dummy-range``) refuses a bad value of its setting naming the key, starts
podnet's operator with the flags its settings mean, and the operator gives each node a CIDR of the
mode's own range (the highest free ones: not cluster-pool's); pods get addresses of their node's
CIDR and reach each other across nodes; status and ``podnet ipam`` report the mode and the CIDRs.
Nothing in podnet names it."""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pluginhelpers import PODNET, plugin_env, podnet_json, run_podnet

from podnet.lab import state as st
from podnet.lab.topology import load_topology
from podnet.verify.probe import tcp_probe

pytestmark = pytest.mark.lab

ENV = plugin_env("podnet_dummyrange")
RANGE = ipaddress.ip_network("10.244.192.0/18")  # inside l2's ipv4NativeRoutingCIDR
# not the mode's defaults (10.244.128.0/17 and 26)
SETTINGS = [a for pair in ("ipam.mode=dummy-range", f"dummyRange.cidr={RANGE}", "dummyRange.maskSize=27")
            for a in ("--set", pair)]  # fmt: skip
# a bad value of each setting, refused before anything is made, naming the key: one per datastore
REFUSED = {
    "etcd": ("dummyRange.maskSize=16", "dummyRange.maskSize: 16 must be longer than dummyRange.cidr's /18"),
    "kubernetes": ("dummyRange.cidr=10.244.192.1/18", "dummyRange.cidr: '10.244.192.1/18' is not an IPv4"),
}
TOP3 = {f"10.244.255.{n}/27" for n in (224, 192, 160)}  # the range's three highest /27s


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"t{secrets.token_hex(2)}-ipamop"
    doc = yaml.safe_load(Path(str(load_topology("l2").source)).read_text())
    doc["name"] = name
    doc["pods"] = [{"count": 1}]  # a pod per node: enough to cross every pair of nodes
    path = tmp_path / "l2.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        yield name, path
    finally:
        subprocess.run([PODNET, "lab", "down", name], capture_output=True, timeout=240, env=ENV)


@pytest.mark.parametrize("datastore", ["etcd", "kubernetes"])
def test_a_plugin_ipam_mode_with_settings_and_an_operator(topology: tuple[str, Path], datastore: str) -> None:
    lab, path = topology
    on = ["--set", f"datastore={datastore}"]
    value, error = REFUSED[datastore]
    bad = run_podnet(ENV, "lab", "up", str(path), *on, *SETTINGS, "--set", value, code=1)
    assert error in bad.stderr, bad.stderr
    assert st.LabState.load(lab) is None  # nothing was made

    run_podnet(ENV, "lab", "up", str(path), *on, *SETTINGS)
    state = st.LabState.load(lab)
    assert state is not None
    operator = state.process("operator")
    assert operator is not None and operator.running()
    flags = " ".join(operator.argv)
    assert f"--ipam dummy-range --dummy-range-cidr {RANGE} --dummy-range-mask-size 27" in flags, flags
    assert ("--etcd-endpoints" if datastore == "etcd" else "--datastore kubernetes") in flags, flags

    status = podnet_json(ENV, "status", "--lab", lab)
    cidrs = {node: doc["ipam"]["podCIDRs"] for node, doc in status["nodes"].items()}
    assert all(doc["ipam"]["mode"] == "dummy-range" for doc in status["nodes"].values()), status["nodes"]
    assert sorted(c for got in cidrs.values() for c in got) == sorted(TOP3), cidrs  # one each, from the top
    for node, doc in status["nodes"].items():
        peers = {p["name"]: p["podCIDRs"] for p in doc["peers"]}
        assert peers == {n: c for n, c in cidrs.items() if n != node}, peers
    for pod, info in state.info["podIPs"].items():
        own = ipaddress.ip_network(cidrs[info["node"]][0])
        assert ipaddress.ip_address(info["ips"][0]) in own, (pod, info, own)
    pods = sorted(state.info["podIPs"].items(), key=lambda item: item[1]["node"])
    for (a, _), (b, to) in zip(pods, pods[1:] + pods[:1], strict=True):  # a ring: every hop crosses nodes
        res = tcp_probe(st.ns_name(lab, a), st.ns_name(lab, b), to["ips"][0])
        assert res.ok, f"{a} -> {b} ({to['ips'][0]}): {res.detail}"
    report = run_podnet(ENV, "ipam", "--lab", lab).stdout
    assert all(f"{node}     {got[0]}" in report for node, got in cidrs.items()), report
    usage = podnet_json(ENV, "ipam", "--lab", lab)["nodes"]
    assert {node: doc["mode"] for node, doc in usage.items()} == dict.fromkeys(cidrs, "dummy-range"), usage
