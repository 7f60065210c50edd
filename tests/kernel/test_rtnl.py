"""podnet.datapath.kernel.rtnl against the kernel, read back through pyroute2 (the library the rest
of podnet reads with): what the hot path writes is what the readers see."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable, Iterator

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel import addr as kaddr
from podnet.datapath.kernel import route as kroute
from podnet.datapath.kernel.rtnl import Rtnl
from podnet.datapath.objects import SCOPE_LINK, Route
from podnet.util.netns import netlink_socket_in

pytestmark = pytest.mark.kernel


@pytest.fixture
def pair(netns_factory: Callable[[str], str]) -> Iterator[tuple[Rtnl, Rtnl, int]]:
    """Sockets in a node and a pod namespace, and the pod namespace's descriptor."""
    fds = [os.open(f"/run/netns/{netns_factory(label)}", os.O_RDONLY) for label in ("node", "pod")]
    with Rtnl(fds[0]) as node, Rtnl(fds[1]) as pod:
        yield node, pod, fds[1]
    for fd in fds:
        os.close(fd)


def test_veth_pair_links_and_routes_read_back_as_written(pair: tuple[Rtnl, Rtnl, int]) -> None:
    node, pod, pod_fd = pair
    node.add_veth("lxcrtnltest", "eth0", pod_fd)
    host, peer = node.get_link("lxcrtnltest"), pod.get_link("eth0")
    assert host is not None and peer is not None
    assert (host.kind, peer.kind) == ("veth", "veth")
    assert peer.peer_index == host.index and host.peer_index == peer.index
    assert node.get_link(index=host.index) == host
    assert len(host.mac.split(":")) == 6 and host.mac != peer.mac
    with pytest.raises(NetlinkError) as exists:
        node.add_veth("lxcrtnltest", "eth0", pod_fd)
    assert exists.value.code == errno.EEXIST

    pod.set_link(peer.index, up=True)
    v4, v6 = ipaddress.ip_interface("10.66.0.5/32"), ipaddress.ip_interface("fd66::5/128")
    assert pod.add_addr(peer.index, v4) is True
    assert pod.add_addr(peer.index, v4) is False  # there already
    assert pod.add_addr(peer.index, v6) is True
    gw = ipaddress.ip_address("10.66.0.1")
    on_link = Route(dst=ipaddress.ip_network("10.66.0.1/32"), dev="eth0", scope=SCOPE_LINK)
    default = Route(dst=ipaddress.ip_network("0.0.0.0/0"), dev="eth0", gateway=gw, mtu=1450)
    pod.write_route(on_link, peer.index)
    pod.write_route(default, peer.index)
    pod.write_route(default, peer.index)  # replace: idempotent
    with pytest.raises(NetlinkError) as taken:
        pod.write_route(default, peer.index, replace=False)
    assert taken.value.code == errno.EEXIST

    with netlink_socket_in(pod_fd) as ipr:
        assert kaddr.addresses(ipr, peer.index) == {v4, v6}
        routes = {r.dst: r for r in kroute.dump_routes(ipr, 4)}
    assert routes[on_link.dst] == on_link
    assert routes[default.dst] == default  # protocol, scope, table and MTU as pyroute2 reads them


def test_errors_carry_the_kernels_reason(pair: tuple[Rtnl, Rtnl, int]) -> None:
    node, _pod, pod_fd = pair
    node.add_veth("lxcrtnlerr", "eth0", pod_fd)
    link = node.get_link("lxcrtnlerr")
    assert link is not None
    off_link = Route(
        dst=ipaddress.ip_network("10.1.0.0/16"), dev="lxcrtnlerr", gateway=ipaddress.ip_address("10.77.0.1")
    )
    with pytest.raises(NetlinkError) as bad:
        node.write_route(off_link, link.index)
    assert bad.value.code == errno.ENETUNREACH and "gateway" in str(bad.value).lower()
    assert node.get_link("nosuchlink") is None
    assert node.delete_link(10_000) is False


def test_retired_group_is_deleted_in_one_request(pair: tuple[Rtnl, Rtnl, int]) -> None:
    node, pod, pod_fd = pair
    group = 4242
    for i in range(3):
        node.add_veth(f"lxcgroup{i}", f"net{i}", pod_fd)
        link = node.get_link(f"lxcgroup{i}")
        assert link is not None
        node.set_link(link.index, up=False)
        node.set_link(link.index, name=f"lxzgroup{i}", group=group)
    node.add_veth("lxckeep", "keep0", pod_fd)
    assert node.delete_group(group) is True
    assert node.delete_group(group) is False
    assert [node.get_link(f"lxzgroup{i}") for i in range(3)] == [None, None, None]
    assert pod.get_link("net0") is None  # the peers went with them
    assert node.get_link("lxckeep") is not None and pod.get_link("keep0") is not None


def test_big_tcp_sizes_on_both_ends_of_a_new_veth_and_on_a_link(pair: tuple[Rtnl, Rtnl, int]) -> None:
    """BIG TCP: a veth born with (IPv6, IPv4) GSO/GRO sizes has them on both ends; set_sizes
    changes a link's, read back through pyroute2 for the IPv6 ones; a size above the TSO limit
    is the kernel's refusal, not a silent clamp."""
    node, pod, pod_fd = pair
    node.add_veth("lxcbigtcp", "eth0", pod_fd, gso=(None, 196608))
    host, peer = node.get_link("lxcbigtcp"), pod.get_link("eth0")
    assert host is not None and peer is not None
    for sock, link in ((node, host), (pod, peer)):
        sizes = sock.get_sizes(link.index)
        assert sizes is not None and sizes.gso_ipv4 == sizes.gro_ipv4 == 196608, sizes
        assert (sizes.gso, sizes.gro) == (65536, 65536) and sizes.tso_max >= 196608, sizes
    pod.set_sizes(peer.index, ipv6=131072, ipv4=65536)
    sizes = pod.get_sizes(peer.index)
    assert sizes is not None and (sizes.gso, sizes.gro, sizes.gso_ipv4, sizes.gro_ipv4) == (
        131072, 131072, 65536, 65536,
    ), sizes  # fmt: skip
    with netlink_socket_in(pod_fd) as ipr:
        link = ipr.get_links(peer.index)[0]
        assert link.get_attr("IFLA_GSO_MAX_SIZE") == 131072 and link.get_attr("IFLA_GRO_MAX_SIZE") == 131072
    with pytest.raises(NetlinkError):
        pod.set_sizes(peer.index, ipv6=sizes.tso_max + 4096)
    assert pod.get_sizes(10**6) is None  # gone: None, as get_link
