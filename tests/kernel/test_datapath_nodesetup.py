"""nodesetup: idempotent devices, stable VTEP MAC, sysctls only inside the node namespace."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable

import pytest
from pyroute2 import IPRoute

from podnet import owned
from podnet.config import load_config
from podnet.datapath.bpf import maps, tc
from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel.sysctl import read_sysctl
from podnet.datapath.nodesetup import NodeSetupError, setup_node, vtep_mac_for
from podnet.datapath.objects import FdbEntry
from podnet.datapath.reconcile import Reconciler
from podnet.datapath.tunnels import geneve
from podnet.model import NodeInfo

pytestmark = pytest.mark.kernel

NODE = NodeInfo(
    name="node1",
    ipv4=ipaddress.IPv4Address("172.16.2.2"),
    pod_cidrs=(ipaddress.ip_network("10.244.1.0/24"),),
    router_ips=(ipaddress.ip_address("10.244.1.1"),),
)


@pytest.fixture
def node_ns(netns_factory: Callable[[str], str]) -> str:
    ns, other = netns_factory("node1"), netns_factory("peer")
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": other})
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address="172.16.2.2", prefixlen=24)
        ipr.link("set", index=idx, state="up")
    return ns


def _vxlan_port(ipr: IPRoute, index: int) -> int:
    info = klink.link_msg(ipr, index).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    return int(info.get_attr("IFLA_VXLAN_PORT"))


def test_setup_is_idempotent_and_stable(node_ns: str) -> None:
    config = load_config({"nodeName": "node1"})
    with IPRoute(netns=node_ns) as ipr:
        first = setup_node(ipr, config, NODE, "eth0", netns=node_ns)
        stray = ipaddress.ip_interface("10.9.9.9/32")
        kaddr.ensure_addr(ipr, first.host_index, stray)
        second = setup_node(ipr, config, NODE, "eth0", netns=node_ns)
        assert first == second, "a second setup recreated devices"
        assert first.vtep_mac == vtep_mac_for("node1")
        assert first.tunnel_index is not None
        msg = klink.link_msg(ipr, first.tunnel_index)
        assert msg.get_attr("IFLA_ADDRESS") == first.vtep_mac
        assert msg.get_attr("IFLA_MTU") == 1450 and _vxlan_port(ipr, first.tunnel_index) == 8472
        assert kaddr.addresses(ipr, first.host_index) - {
            a for a in kaddr.addresses(ipr, first.host_index) if a.ip.is_link_local
        } == {ipaddress.ip_interface("10.244.1.1/32")}, (
            "router IP missing or stray address kept on podnet_host"
        )
        for dev in (owned.HOST_DEV, owned.NET_DEV, owned.VXLAN_DEV):
            index = klink.link_index(ipr, dev)
            assert index is not None and klink.link_msg(ipr, index)["flags"] & 1, f"{dev} is not up"
    assert read_sysctl("net.ipv4.ip_forward", netns=node_ns) == "1"
    assert read_sysctl(f"net.ipv4.conf.{owned.VXLAN_DEV}.rp_filter", netns=node_ns) == "0"


def test_port_change_recreates_and_native_removes_the_tunnel(node_ns: str) -> None:
    with IPRoute(netns=node_ns) as ipr:
        setup_node(ipr, load_config({"nodeName": "node1"}), NODE, "eth0", netns=node_ns)
        moved = setup_node(
            ipr, load_config({"nodeName": "node1", "tunnelPort": 4789}), NODE, "eth0", netns=node_ns
        )
        assert moved.tunnel_index is not None and _vxlan_port(ipr, moved.tunnel_index) == 4789
        native_cfg = load_config(
            {"nodeName": "node1", "routingMode": "native", "enableIPv4Masquerade": False}
        )
        native = setup_node(ipr, native_cfg, NODE, "eth0")  # namespace taken from the socket
        assert native.tunnel_dev is None and native.vtep_mac is None
        assert klink.link_index(ipr, owned.VXLAN_DEV) is None
        assert klink.link_index(ipr, owned.HOST_DEV) is not None


def test_missing_underlay_is_refused_with_advice(node_ns: str) -> None:
    with IPRoute(netns=node_ns) as ipr, pytest.raises(NodeSetupError, match="underlay device eth9 does not"):
        setup_node(ipr, load_config({"nodeName": "node1"}), NODE, "eth9", netns=node_ns)


def _programs(ns: str, dev: str, direction: str) -> list[tc.Attached]:
    return [f for f in tc.filters(ns, dev, direction) if f.pref == geneve.PREF]


def test_geneve_in_bpf_attaches_keeps_and_removes_only_its_programs(node_ns: str) -> None:
    """tunnelProtocol=geneve: a veth with the VTEP MAC whose egress program encapsulates, a decap
    program on the underlay's ingress; a second setup keeps both programs (and their maps); the
    peer entries live in the maps; a switch back to VXLAN removes both programs and frees them."""
    config = load_config({"nodeName": "node1", "tunnelProtocol": "geneve"})
    with IPRoute(netns=node_ns) as ipr:
        first = setup_node(ipr, config, NODE, "eth0", netns=node_ns)
        assert first.tunnel_dev == owned.GENEVE_DEV and first.vtep_mac == vtep_mac_for("node1")
        assert klink.link_msg(ipr, first.tunnel_index).get_attr("IFLA_MTU") == 1450
        (encap,), (decap,) = (
            _programs(node_ns, "podnet_geneve", "egress"),
            _programs(node_ns, "eth0", "ingress"),
        )
        setup_node(ipr, config, NODE, "eth0", netns=node_ns)
        assert _programs(node_ns, "podnet_geneve", "egress") == [encap]  # kept: same build, same maps
        assert _programs(node_ns, "eth0", "ingress") == [decap]
        protocol = geneve.Geneve()
        entry = FdbEntry("02:11:22:33:44:55", ipaddress.ip_address("172.16.2.3"), "podnet_geneve")
        protocol.set_peer(ipr, first.tunnel_index, entry)
        assert protocol.dump_peers(ipr, first.tunnel_index, "podnet_geneve") == [entry]
        assert protocol.stats(ipr)["allowed"] == 1
        assert protocol.delete_peer(ipr, first.tunnel_index, entry)
        assert protocol.dump_peers(ipr, first.tunnel_index, "podnet_geneve") == []
        assert protocol.stats(ipr)["allowed"] == 0  # nobody's Geneve is decapsulated any more
        setup_node(ipr, load_config({"nodeName": "node1"}), NODE, "eth0", netns=node_ns)
        assert klink.link_index(ipr, owned.GENEVE_DEV) is None
        assert tc.filters(node_ns, "eth0", "ingress") == []
        for prog in (encap, decap):
            assert subprocess.run(["bpftool", "prog", "show", "id", str(prog.prog_id)],
                                  capture_output=True).returncode != 0  # fmt: skip


def test_refuses_the_machines_own_namespace() -> None:
    """Safety net: an IPRoute() in the initial namespace is refused before anything is touched."""
    with IPRoute() as ipr:
        with pytest.raises(PermissionError, match="initial network namespace"):
            setup_node(ipr, load_config({"nodeName": "node1"}), NODE, "eth0")
        with pytest.raises(PermissionError, match="initial network namespace"):
            Reconciler(ipr)
        assert klink.link_index(ipr, owned.HOST_DEV) is None


def _bpftool_dump(map_id: int) -> list[tuple[bytes, bytes]]:
    """What ``bpftool -j map dump`` lists, in maps.dump's shape: the reference for the syscalls."""
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)], capture_output=True, text=True)
    found = []
    for entry in json.loads(out.stdout or "[]"):
        key = bytes(int(b, 16) for b in entry["key"])
        if "values" in entry:
            value = b"".join(bytes(int(b, 16) for b in v["value"]) for v in entry["values"])
        else:
            value = bytes(int(b, 16) for b in entry["value"])
        found.append((key, value))
    return sorted(found)


def test_maps_by_syscall_and_filters_by_netlink_read_what_bpftool_and_tc_read(node_ns: str) -> None:
    """datapath/bpf/maps.py and tc.listed replaced a bpftool or tc process per call: they must see
    exactly what those tools see, and refuse a key or value of the wrong size before the kernel
    reads past the buffer."""
    config = load_config({"nodeName": "node1", "tunnelProtocol": "geneve"})
    with IPRoute(netns=node_ns) as ipr:
        setup_node(ipr, config, NODE, "eth0", netns=node_ns)
        for dev, direction in (("podnet_geneve", "egress"), ("eth0", "ingress"), ("eth0", "egress")):
            assert tc.listed(ipr, dev, direction) == tc.filters(node_ns, dev, direction)
        assert tc.listed(ipr, "no-such-device", "ingress") == []
        (decap,) = tc.listed(ipr, "eth0", "ingress")
        ids = maps.program_maps(decap.prog_id)
        assert ids and all(isinstance(i, int) for i in ids.values())
        for map_id in ids.values():
            assert sorted(maps.dump(map_id)) == _bpftool_dump(map_id)
        assert {"gnv_config", "gnv_stats", "gnv_allowed"} <= set(ids)  # an array, a per-CPU array, a hash
        peers = ids["gnv_allowed"]
        key, value = ipaddress.IPv4Address("172.16.2.9").packed, (1).to_bytes(4, "little")
        maps.update(peers, key, value)
        assert (key, value) in _bpftool_dump(peers)
        with pytest.raises(maps.MapError, match="takes key 4 bytes"):
            maps.update(peers, key + b"\0", value)
        maps.delete(peers, key)
        assert (key, value) not in _bpftool_dump(peers)
        with pytest.raises(maps.MapError, match="No such file"):
            maps.delete(peers, key)


def test_big_tcp_follows_the_setting_and_leaves_an_operators_size(node_ns: str) -> None:
    """enableIPv4BIGTCP/enableIPv6BIGTCP: the underlay device gets 192 KiB GSO/GRO sizes and the
    pods' (NodeDevices.big_tcp); off again, podnet's own sizes go back to 65536, while a size an
    operator wrote is left as it is."""
    from podnet.datapath.bigtcp import BIG_TCP_SIZE
    from podnet.datapath.kernel.rtnl import Rtnl

    base = {"nodeName": "node1", "routingMode": "native", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}
    on = load_config({**base, "enableIPv4BIGTCP": True, "ipv6.enabled": True, "enableIPv6BIGTCP": True,
                      "ipv6NativeRoutingCIDR": "fd00:10::/64"})  # fmt: skip
    off = load_config(base)
    with IPRoute(netns=node_ns) as ipr, Rtnl.in_netns(node_ns) as sock:
        index = klink.link_index(ipr, "eth0")
        assert index is not None
        devices = setup_node(ipr, on, NODE, "eth0", netns=node_ns)
        assert (devices.big_tcp.ipv4, devices.big_tcp.ipv6) == (BIG_TCP_SIZE, BIG_TCP_SIZE), devices.big_tcp
        assert devices.big_tcp.veth_sizes() == (BIG_TCP_SIZE, BIG_TCP_SIZE)
        sizes = sock.get_sizes(index)
        assert sizes is not None
        assert {sizes.gso, sizes.gro, sizes.gso_ipv4, sizes.gro_ipv4} == {BIG_TCP_SIZE}, sizes
        assert setup_node(ipr, on, NODE, "eth0", netns=node_ns) == devices  # idempotent
        devices = setup_node(ipr, off, NODE, "eth0", netns=node_ns)
        assert devices.big_tcp.veth_sizes() == (None, None)
        sizes = sock.get_sizes(index)
        assert sizes is not None and {sizes.gso, sizes.gro, sizes.gso_ipv4, sizes.gro_ipv4} == {65536}, sizes
        sock.set_sizes(index, ipv4=131072)  # an operator's own choice
        setup_node(ipr, off, NODE, "eth0", netns=node_ns)
        sizes = sock.get_sizes(index)
        assert sizes is not None and (sizes.gso_ipv4, sizes.gso) == (131072, 65536), sizes
