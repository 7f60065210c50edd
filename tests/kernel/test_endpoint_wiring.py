"""podnet.datapath.endpoint against real namespaces: idempotence, rollback, DEL, CHECK, listing."""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath import endpoint as ep
from podnet.util import netns

pytestmark = pytest.mark.kernel

ADDR = ipaddress.IPv4Interface("10.88.0.5/32")
ROUTER = ipaddress.IPv4Address("10.88.0.1")
POD = [ep.PodAddress(ADDR, ROUTER)]


def add(node: str, path: str, *args: Any) -> ep.EndpointInfo:
    """``add_endpoint`` with the namespace opened from ``path``, as the plugin opens CNI_NETNS."""
    with ep.opened(path) as pod:
        return ep.add_endpoint(node, pod, *args)


def check(node: str, path: str, *args: Any) -> list[str]:
    with ep.opened(path) as pod:
        return ep.check_endpoint(node, pod, *args)


def delete(node: str, cid: str, ifname: str, path: str) -> bool:
    """DEL as the agent gets it: with the namespace when the plugin could open it, else without."""
    try:
        with ep.opened(path) as pod:
            return ep.del_endpoint(node, cid, ifname, pod)
    except ep.NetnsNotFoundError:
        return ep.del_endpoint(node, cid, ifname)


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def test_add_is_idempotent_and_check_is_clean(netns_factory: Callable[[str], str]) -> None:
    node, pod = netns_factory("node"), netns_factory("pod")
    first = add(node, f"/run/netns/{pod}", "cid1", "eth0", POD, 1450)
    again = add(node, f"/run/netns/{pod}", "cid1", "eth0", POD, 1450)
    assert first == again
    assert first.host_ifname == owned.endpoint_host_ifname("cid1", "eth0")
    assert ep.list_endpoints(node) == [first.host_ifname]
    assert check(node, f"/run/netns/{pod}", "cid1", "eth0", POD, 1450) == []
    assert ",UP," in ip("-n", pod, "link", "show", "lo")
    problems = check(
        node,
        f"/run/netns/{pod}",
        "cid1",
        "eth0",
        [ep.PodAddress(ipaddress.IPv4Interface("10.88.0.9/32"), ROUTER)],
        1500,
    )
    assert any("10.88.0.9/32" in p for p in problems)
    assert any("mtu" in p for p in problems)


def test_proc_pid_netns_path_works(netns_factory: Callable[[str], str]) -> None:
    node, pod = netns_factory("node"), netns_factory("pod")
    proc = subprocess.Popen(["ip", "netns", "exec", pod, "sleep", "30"])
    try:
        path = f"/proc/{proc.pid}/ns/net"
        deadline_tries = 50
        while netns.inode(pod) is None or _ino(path) != netns.inode(pod):
            deadline_tries -= 1
            assert deadline_tries > 0, "sleep never entered the pod namespace"
            subprocess.run(["sleep", "0.05"], check=True)
        info = add(node, path, "cid2", "eth1", POD, 1500)
        assert info.netns_path == path
        assert str(ADDR) in ip("-n", pod, "addr", "show", "eth1")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _ino(path: str) -> int | None:
    import os

    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def test_failure_after_veth_creation_rolls_back(
    netns_factory: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node, pod = netns_factory("node"), netns_factory("pod")

    def failing(*_args: object, **_kwargs: object) -> None:
        raise NetlinkError(errno.EPERM, "injected")

    monkeypatch.setattr(ep.Rtnl, "add_addr", failing)  # the step after the veth is made
    with pytest.raises(ep.EndpointError, match="failed to wire eth0"):
        add(node, f"/run/netns/{pod}", "cid3", "eth0", POD, 1500)
    assert ep.list_endpoints(node) == []
    assert "eth0" not in ip("-n", pod, "link")


def test_foreign_ifname_in_pod_is_refused_and_left_alone(netns_factory: Callable[[str], str]) -> None:
    node, pod = netns_factory("node"), netns_factory("pod")
    with IPRoute(netns=pod, flags=0) as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "theirs0"})
    with pytest.raises(ep.EndpointError, match="already exists"):
        add(node, f"/run/netns/{pod}", "cid4", "eth0", POD, 1500)
    assert ep.list_endpoints(node) == []
    assert "theirs0" in ip("-n", pod, "link")


def test_missing_netns_is_netns_not_found(netns_factory: Callable[[str], str]) -> None:
    node = netns_factory("node")
    with pytest.raises(ep.NetnsNotFoundError) as info:
        add(node, "/run/netns/pnt-no-such-ns", "cid5", "eth0", POD, 1500)
    assert "cannot be opened" in str(info.value)
    assert not netns.exists("pnt-no-such-ns")  # never created by accident


def test_del_twice_and_after_netns_removal(netns_factory: Callable[[str], str]) -> None:
    node, pod = netns_factory("node"), netns_factory("pod")
    add(node, f"/run/netns/{pod}", "cid6", "eth0", POD, 1500)
    assert delete(node, "cid6", "eth0", f"/run/netns/{pod}") is True
    assert delete(node, "cid6", "eth0", f"/run/netns/{pod}") is False
    assert "10.88.0.5" not in ip("-n", node, "route")
    add(node, f"/run/netns/{pod}", "cid6", "eth0", POD, 1500)
    netns.remove(pod)  # the kernel tears the veth down asynchronously: it may still be there
    delete(node, "cid6", "eth0", f"/run/netns/{pod}")
    delete(node, "cid6", "eth0", f"/run/netns/{pod}")
    assert ep.list_endpoints(node) == []


def test_retire_unplugs_at_once_and_purge_deletes_later(netns_factory: Callable[[str], str]) -> None:
    """CNI DEL's path: the node end goes down (its route with it) and both ends are renamed, so
    the same attachment can be wired again into the same namespace before the purge ran."""
    node, pod = netns_factory("node"), netns_factory("pod")
    info = add(node, f"/run/netns/{pod}", "cid7", "eth0", POD, 1500)
    with ep.opened(f"/run/netns/{pod}") as netns_:
        assert ep.retire_endpoint(node, "cid7", "eth0", netns_) is True
    assert ep.list_endpoints(node) == []
    assert "10.88.0.5" not in ip("-n", node, "route")
    assert "eth0" not in ip("-n", pod, "-o", "link").split()  # renamed: the name is free
    retired = ip("-n", node, "-o", "link", "show", "group", str(owned.RETIRED_GROUP))
    assert ep.retired_name(info.host_ifindex) in retired and ",UP" not in retired
    again = add(node, f"/run/netns/{pod}", "cid7", "eth0", POD, 1500)  # a runtime's re-ADD
    assert check(node, f"/run/netns/{pod}", "cid7", "eth0", POD, 1500) == []
    assert ep.purge_retired(node) is True
    assert ep.purge_retired(node) is False
    assert ip("-n", node, "-o", "link", "show", "group", str(owned.RETIRED_GROUP)).strip() == ""
    assert ep.list_endpoints(node) == [again.host_ifname]  # the new pair survived the purge
    assert check(node, f"/run/netns/{pod}", "cid7", "eth0", POD, 1500) == []
    with ep.opened(f"/run/netns/{pod}") as netns_:
        assert ep.retire_endpoint(node, "cid7", "eth0", netns_) is True
        assert ep.retire_endpoint(node, "cid7", "eth0", netns_) is False  # DEL twice
    netns.remove(pod)
    assert ep.retire_endpoint(node, "cid7", "eth0") is False  # and after the namespace went
    ep.purge_retired(node)
    assert "lxz" not in ip("-n", node, "-o", "link")


def test_delete_host_link_refuses_foreign_names(netns_factory: Callable[[str], str]) -> None:
    node = netns_factory("node")
    with pytest.raises(ValueError, match="not a podnet endpoint"):
        ep.delete_host_link(node, "eth0")


def test_the_callers_own_namespace_is_never_taken_for_a_pod(netns_factory) -> None:  # type: ignore[no-untyped-def]
    import ipaddress

    import pytest

    from podnet.datapath import endpoint as ep

    node = netns_factory("ownns")
    with pytest.raises(ep.NetnsNotFoundError, match="node's own network namespace"):
        add(
            node,
            "/proc/self/ns/net",
            "c-own",
            "eth0",
            [ep.PodAddress(ipaddress.ip_interface("10.9.9.2/32"), ipaddress.ip_address("10.9.9.1"))],
            1450,
        )
