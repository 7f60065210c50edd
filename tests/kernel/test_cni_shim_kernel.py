"""The real ``podnet-cni`` shim, run as a container runtime runs it, against an agent API in-process.

Each test builds a "node" namespace with the router IP on a veth (``podnet_host``), pod namespaces,
a ``CniHandler`` bound to the node namespace and an API socket in ``tmp_path``; the shim runs as
``ip netns exec <node> .venv/bin/podnet-cni`` with CNI_* in its environment and the netconf on stdin.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cninode import CONF, ROUTE_MTU, ROUTER, Node, pod_path
from pyroute2 import IPRoute

from podnet import owned
from podnet.agent.cni_handler import CniHandler
from podnet.cni import spec
from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.util import netns

pytestmark = pytest.mark.kernel


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def ping(ns: str, target: str) -> bool:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", target], capture_output=True, timeout=30
    )
    return proc.returncode == 0


def test_add_wires_pods_that_reach_router_and_each_other(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod_a, pod_b = netns_factory("poda"), netns_factory("podb")
    rc, result = node.cni("ADD", "cid-a", pod_path(pod_a))
    assert rc == 0, result
    assert result is not None and result["cniVersion"] == "1.1.0"
    host_if = owned.endpoint_host_ifname("cid-a", "eth0")
    assert [i["name"] for i in result["interfaces"]] == [host_if, "eth0"]
    assert result["interfaces"][1]["sandbox"] == pod_path(pod_a)
    addr_a = result["ips"][0]["address"]
    assert addr_a == "10.77.0.2/32" and result["ips"][0]["gateway"] == str(ROUTER)
    assert result["ips"][0]["interface"] == 1 and "version" not in result["ips"][0]
    # the on-link route to the gateway the pod got, then its default route (CONF is 1.1.0)
    assert result["routes"] == [
        {"dst": f"{ROUTER}/32", "scope": 253},
        {"dst": "0.0.0.0/0", "gw": str(ROUTER), "mtu": ROUTE_MTU},
    ]
    rc, result_b = node.cni("ADD", "cid-b", pod_path(pod_b))
    assert rc == 0 and result_b is not None
    addr_b = result_b["ips"][0]["address"]
    assert addr_b != addr_a

    assert f"default via {ROUTER} dev eth0" in ip("-n", pod_a, "route")
    assert f"mtu {ROUTE_MTU}" in ip("-n", pod_a, "route")
    assert f"10.77.0.2 dev {host_if} proto 201 scope link" in ip("-n", node.ns, "route")
    assert ping(pod_a, str(ROUTER))
    assert ping(pod_a, addr_b.split("/")[0])
    assert ping(pod_b, addr_a.split("/")[0])
    assert node.handler.records()[0].pod_name == "web"

    assert node.cni("CHECK", "cid-b", pod_path(pod_b))[0] == 0
    ip("-n", pod_b, "addr", "flush", "dev", "eth0")
    rc, err = node.cni("CHECK", "cid-b", pod_path(pod_b))
    assert rc != 0 and err is not None and err["code"] == spec.ERR_CHECK_FAILED
    assert addr_b in err["details"]

    assert node.cni("DEL", "cid-a", pod_path(pod_a)) == (0, None)
    assert node.cni("DEL", "cid-a", pod_path(pod_a)) == (0, None)
    assert node.lxc_links() == [owned.endpoint_host_ifname("cid-b", "eth0")]
    assert "cid-a/eth0" not in node.allocator.allocated()
    assert not ping(pod_b, addr_a.split("/")[0])


def test_old_cni_version_gets_old_result_form(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod = netns_factory("pod")
    rc, result = node.cni("ADD", "cid-old", pod_path(pod), config={**CONF, "cniVersion": "0.4.0"})
    assert rc == 0 and result is not None
    assert result["cniVersion"] == "0.4.0"
    assert result["ips"][0]["version"] == "4"
    assert result["routes"] == [{"dst": f"{ROUTER}/32"}, {"dst": "0.0.0.0/0", "gw": str(ROUTER)}]


def test_del_succeeds_when_netns_is_gone(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod = netns_factory("gone")
    assert node.cni("ADD", "cid-gone", pod_path(pod))[0] == 0
    netns.remove(pod)  # the runtime tore the sandbox down first: the veth died with it
    assert node.cni("DEL", "cid-gone", pod_path(pod)) == (0, None)
    assert node.cni("DEL", "cid-gone", "") == (0, None)
    assert node.lxc_links() == []
    assert node.allocator.allocated() == {}
    assert node.handler.records() == []


def assert_nothing_left(node: Node, pod: str, cid: str) -> None:
    assert owned.endpoint_host_ifname(cid, "eth0") not in node.lxc_links()
    assert f"{cid}/eth0" not in node.allocator.allocated()
    assert all(r.container_id != cid for r in node.handler.records())
    if netns.exists(pod):
        assert "10.77." not in ip("-n", pod, "addr")
        assert "eth0" not in ip("-n", pod, "link")


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("bad-netns", spec.ERR_NETNS_NOT_FOUND),
        ("malformed-stdin", spec.ERR_DECODE),
        ("missing-env", spec.ERR_INVALID_ENV),
        ("fail-after-ipam", spec.ERR_INJECTED),
        ("ifname-taken", spec.ERR_INTERFACE_SETUP),
    ],
)
def test_failed_add_leaves_nothing_behind(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str], scenario: str, code: int
) -> None:
    node = make_node(fail_after_ipam=scenario == "fail-after-ipam")
    pod = netns_factory("pod")
    path = pod_path(pod)
    if scenario == "ifname-taken":
        with IPRoute(netns=pod, flags=0) as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "other0"})
    if scenario == "bad-netns":
        path = pod_path(f"{pod}-does-not-exist")
    stdin = b'{"cniVersion": "1.1.0", "name": ' if scenario == "malformed-stdin" else None
    rc, err = node.cni("ADD", "cid-fail", "" if scenario == "missing-env" else path, stdin=stdin)
    assert rc != 0 and err is not None
    assert err["code"] == code and err["cniVersion"] == "1.1.0" and err["msg"]
    if scenario == "ifname-taken":
        assert "eth0" in ip("-n", pod, "link")  # not ours: left alone
        assert owned.endpoint_host_ifname("cid-fail", "eth0") not in node.lxc_links()
        assert node.allocator.allocated() == {}
    else:
        assert_nothing_left(node, pod, "cid-fail")
    assert node.allocator.allocated() == {}


def test_exhausted_allocator_and_status(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node(cidr="10.77.0.0/30")  # .0 network, .1 router, .3 broadcast: one pod fits
    pod_a, pod_b = netns_factory("poda"), netns_factory("podb")
    assert node.cni("STATUS") == (0, None)
    assert node.cni("ADD", "cid-a", pod_path(pod_a))[0] == 0
    rc, err = node.cni("ADD", "cid-b", pod_path(pod_b))
    assert rc != 0 and err is not None and err["code"] == spec.ERR_IPAM_EXHAUSTED
    assert "10.77.0.0/30" in err["details"]
    assert_nothing_left(node, pod_b, "cid-b")
    rc, err = node.cni("STATUS")
    assert rc != 0 and err is not None and err["code"] == spec.ERR_PLUGIN_NOT_AVAILABLE
    assert node.cni("DEL", "cid-a", pod_path(pod_a)) == (0, None)
    assert node.cni("STATUS") == (0, None)


def test_version_through_the_real_binary(make_node: Callable[..., Node]) -> None:
    node = make_node()
    rc, out = node.cni("VERSION", stdin=b'{"cniVersion": "1.0.0"}')
    assert rc == 0 and out == {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)}


def test_gc_removes_attachments_not_listed_and_orphan_links(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod_a, pod_b = netns_factory("poda"), netns_factory("podb")
    assert node.cni("ADD", "cid-a", pod_path(pod_a))[0] == 0
    assert node.cni("ADD", "cid-b", pod_path(pod_b))[0] == 0
    with IPRoute(netns=node.ns, flags=0) as ipr:  # a veth left by a crash between record and wiring
        ipr.link("add", ifname="lxc00000000000", kind="veth", peer={"ifname": "orphan0"})
    valid = [{"containerID": "cid-a", "ifname": "eth0"}]
    rc, out = node.cni("GC", config={**CONF, spec.VALID_ATTACHMENTS_KEY: valid})
    assert (rc, out) == (0, None)
    assert node.lxc_links() == [owned.endpoint_host_ifname("cid-a", "eth0")]
    assert list(node.allocator.allocated()) == ["cid-a/eth0"]
    assert [r.container_id for r in node.handler.records()] == ["cid-a"]
    assert ping(pod_a, str(ROUTER))


def test_records_survive_an_agent_restart(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod = netns_factory("pod")
    _rc, result = node.cni("ADD", "cid-a", pod_path(pod))
    assert result is not None
    fresh = MultiCIDRAllocator([ipaddress.IPv4Network("10.77.0.0/24")])
    CniHandler(node.ns, fresh, ROUTE_MTU, node.handler.store_dir)
    assert fresh.allocated() == {"cid-a/eth0": (ipaddress.IPv4Address(result["ips"][0]["address"][:-3]),)}


def test_add_result_carries_the_dns_the_runtime_asked_for(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    runtime = {"dns": {"nameservers": ["10.96.0.10"]}}
    conf = {**CONF, "dns": {"search": ["default.svc"]}, "runtimeConfig": runtime}
    rc, result = node.cni("ADD", "dns1", pod_path(netns_factory("dns")), config=conf)
    assert rc == 0 and result is not None
    assert result["dns"] == {"search": ["default.svc"], "nameservers": ["10.96.0.10"]}


def test_a_second_attachment_never_takes_or_breaks_the_first(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod = netns_factory("two")
    assert node.cni("ADD", "c2", pod_path(pod), ifname="eth0")[0] == 0
    rc, second = node.cni("ADD", "c2", pod_path(pod), ifname="net1")
    assert rc == 0 and second is not None
    assert second["routes"] == [{"dst": f"{ROUTER}/32", "scope": 253}]  # it does not own the default
    routes = ip("-n", pod, "route")
    assert f"default via {ROUTER} dev eth0" in routes, routes
    assert second["ips"][0]["address"] in ip("-n", pod, "addr", "show", "net1")
    assert not any(line.startswith("default") and "net1" in line for line in routes.splitlines()), routes
    assert f"{ROUTER} dev eth0" in routes, routes  # the owner keeps its on-link route to the gateway
    assert node.cni("CHECK", "c2", pod_path(pod), ifname="net1")[0] == 0
    assert node.cni("DEL", "c2", pod_path(pod), ifname="net1")[0] == 0
    assert f"default via {ROUTER} dev eth0" in ip("-n", pod, "route")
    rc, out = node.cni("CHECK", "c2", pod_path(pod), ifname="eth0")
    assert rc == 0, out


def test_default_route_follows_the_netconfs_default_route(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    """``defaultRoute: true`` takes the pod's default route from the first attachment,
    ``false`` never owns it (not even as the first), anything else is refused (code 7)."""
    node = make_node()
    pod = netns_factory("dflt")
    rc, bad = node.cni("ADD", "d1", pod_path(pod), config={**CONF, "defaultRoute": "yes"})
    assert rc == 1 and bad is not None and bad["code"] == 7 and "defaultRoute" in bad["details"]
    assert node.lxc_links() == []
    rc, first = node.cni("ADD", "d1", pod_path(pod), config={**CONF, "defaultRoute": False})
    assert rc == 0 and first is not None
    assert not any(r["dst"] == "0.0.0.0/0" for r in first["routes"])
    assert "default" not in ip("-n", pod, "route")
    assert node.cni("ADD", "d1", pod_path(pod), ifname="net1")[0] == 0  # no owner yet: it owns it
    assert f"default via {ROUTER} dev net1" in ip("-n", pod, "route")
    rc, third = node.cni("ADD", "d1", pod_path(pod), ifname="net2", config={**CONF, "defaultRoute": True})
    assert rc == 0 and third is not None and any(r["dst"] == "0.0.0.0/0" for r in third["routes"])
    assert f"default via {ROUTER} dev net2" in ip("-n", pod, "route")
    owners = {r["ifname"]: r["defaultRoute"] for r in node.handler.status()["endpoints"]}
    assert owners == {"eth0": False, "net1": False, "net2": True}
    for ifname in ("eth0", "net1"):  # neither checks for a default route it no longer owns
        assert node.cni("CHECK", "d1", pod_path(pod), ifname=ifname)[0] == 0
    assert (
        node.cni("CHECK", "d1", pod_path(pod), ifname="net2", config={**CONF, "defaultRoute": True})[0] == 0
    )


PRIVATE_RUNTIME = r"""
set -eu
mount -t tmpfs pnt-private "$DIR"           # seen only in this mount namespace
touch "$DIR/c1" "$DIR/c2"
unshare --net="$DIR/c1" true                # two pod namespaces, bound to files here only
unshare --net="$DIR/c2" true
cni() { CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS="$DIR/$2" ip netns exec "$NODE" "$PLUGIN" < "$CONF"; }
cni ADD c1 > "$OUT/add"
cni CHECK c1
nsenter --net="$DIR/c1" ip -o addr show eth0 > "$OUT/addr"
cni ADD c2 > /dev/null
cni DEL c2
cni DEL c2
"""


def test_a_runtime_in_its_own_mount_namespace_and_a_pod_that_vanishes_without_del(
    make_node: Callable[..., Node], tmp_path: Path
) -> None:
    """The runtime's netns paths exist only in its private mount namespace (podman started with
    ``ip netns exec``): the plugin opens them there and hands the descriptor over, so ADD, CHECK
    and DEL work although the agent cannot see the path. When that namespace goes away with no
    DEL (containerd's ``ctr`` after kill and rm), status shows the endpoint stale and the reaper
    frees it."""
    import json
    import os

    from podnet.agent.reaper import EndpointReaper

    node = make_node()
    private, out, conf = tmp_path / "private", tmp_path / "out", tmp_path / "conf.json"
    private.mkdir()
    out.mkdir()
    conf.write_text(json.dumps(CONF))
    env = {**node.env("ADD", "", ""), "DIR": str(private), "OUT": str(out), "CONF": str(conf),
           "NODE": node.ns, "PLUGIN": str(node.plugin)}  # fmt: skip
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_RUNTIME],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not os.listdir(private)  # the agent's mount namespace never saw the pods' paths
    address = json.loads((out / "add").read_text())["ips"][0]["address"]
    assert address in (out / "addr").read_text()
    assert [r.container_id for r in node.handler.records()] == ["c1"]  # c2's DEL went through

    # the runtime's mount namespace is gone, with the only reference to c1's network namespace
    reaper = EndpointReaper(lambda: node.handler, lambda: 300.0)
    deadline = time.monotonic() + 30
    while not node.handler.stale() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r.container_id for r in node.handler.stale()] == ["c1"]
    assert reaper.status()["stale"][0]["addresses"] == [address]
    assert [r.container_id for r in reaper.sweep()] == ["c1"]
    assert node.handler.records() == [] and node.allocator.allocated() == {}
    assert node.lxc_links() == [] and reaper.status()["reaped"] == 1
    assert reaper.sweep() == []  # nothing twice


def test_a_record_left_by_a_crash_mid_add_is_stale_and_reaped_after_a_restart(
    make_node: Callable[..., Node],
) -> None:
    """An ADD recorded but never wired (the agent killed between the two): after a restart it
    holds an address that no pod has; the reaper gives it back."""
    import json

    from podnet.model import Endpoint

    node = make_node()
    record = Endpoint(
        container_id="crashed", ifname="eth0", netns="/run/netns/pnt-gone",
        host_ifname=owned.endpoint_host_ifname("crashed", "eth0"),
        addresses=(ipaddress.ip_interface("10.77.0.9/32"),), gateways=(ROUTER,),
    )  # fmt: skip
    (node.handler.store_dir / f"{record.host_ifname}.json").write_text(json.dumps(record.to_json()))
    fresh = MultiCIDRAllocator([ipaddress.IPv4Network("10.77.0.0/24")])
    restarted = CniHandler(node.ns, fresh, ROUTE_MTU, node.handler.store_dir)
    assert fresh.allocated() == {"crashed/eth0": (ipaddress.IPv4Address("10.77.0.9"),)}
    assert [r.container_id for r in restarted.reap_stale()] == ["crashed"]
    assert fresh.allocated() == {} and restarted.records() == []
    assert not (node.handler.store_dir / f"{record.host_ifname}.json").exists()
