"""The runtime tier: podnet's plugin under CNI clients no one on the project wrote.

One lab (l2, three nodes, one pod on node2). On node1, the upstream ``cnitool`` (built from
Debian's source) and podman 4.3 with its CNI backend wire containers with the conflist that
``podnet install-cni`` writes; each container reaches the pod on node2 over TCP, survives
CHECK, DEL twice, a restart and a second attachment, and nothing is left behind: no record,
address, guard entry or veth. podman runs in a private mount namespace (as ``ip netns exec``
gives one), so the agent never sees the container's netns path: the plugin hands it over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtimes import Cnitool, make_cnitool, make_podman, tools

from podnet.lab import cluster as cl
from podnet.lab import state as st
from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology, load_topology
from podnet.util import netns

pytestmark = pytest.mark.lab

PORT = 7070
NETWORKS = ("podnet", "podnet2")  # two networks: the second is a second attachment (eth1 / net1)


@dataclasses.dataclass
class World:
    topo: Topology
    server_ip: str
    tool: dict[str, str]
    work: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    tool = tools()
    base = apply_overrides(load_topology("l2"), ["routingMode=tunnel", "autoDirectNodeRoutes=false"])
    topo = dataclasses.replace(
        base,
        name=f"t{secrets.token_hex(2)}-rt",
        pods=tuple(p for p in base.pods if p.name == "node2-p1"),
    )
    made_var_lib_cni = not Path("/var/lib/cni").exists()  # podman's fixed cache: a tmpfs covers it
    if made_var_lib_cni:
        Path("/var/lib/cni").mkdir(parents=True)
    try:
        bring_up(topo)
        state = st.LabState.load(topo.name)
        assert state is not None
        server_ip = state.info["podIPs"]["node2-p1"]["ips"][0]
        yield World(topo, server_ip, tool, tmp_path_factory.mktemp("runtime"))
    finally:
        bring_down(topo.name)
        if made_var_lib_cni:
            with contextlib.suppress(OSError):
                Path("/var/lib/cni").rmdir()


@contextlib.contextmanager
def echo_server(w: World, connections: int) -> Iterator[list[str]]:
    """Answers ``pong <client address>`` on node2-p1:PORT for ``connections`` clients (or until
    the block ends); yields the list of client addresses it saw."""
    with netns.entered(st.ns_name(w.topo.name, "node2-p1")):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((w.server_ip, PORT))
    server.listen(8)
    server.settimeout(0.5)
    seen: list[str] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set() and len(seen) < connections:
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            with conn:
                seen.append(peer[0])
                with contextlib.suppress(OSError):
                    conn.sendall(f"pong {peer[0]}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def node1_state(w: World) -> dict[str, Any]:
    """The node1 agent's endpoints and IPAM allocations, and node1's pod links."""
    status = cl.agent_request(w.topo.name, "node1", {"op": "status"})
    links = netns_links(st.ns_name(w.topo.name, "node1"))
    return {
        "records": status["endpoints"]["total"],
        "stale": status["endpoints"]["stale"],
        "reaped": status["endpoints"]["reaped"],
        "lastReaped": status["endpoints"]["lastReaped"],
        "lxc": [n for n in links if n.startswith("lxc")],
        "allocated": status["ipam"].get("allocations", {}),
    }


def netns_links(ns: str) -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        return [str(link.get("IFLA_IFNAME")) for link in ipr.link("dump")]


def assert_clean(w: World) -> None:
    now = node1_state(w)
    assert now["records"] == 0 and now["lxc"] == [] and now["allocated"] == {}, now


# ---- cnitool --------------------------------------------------------------------------------------


def test_cnitool_add_reach_check_del_twice_readd_and_a_second_attachment(world: World) -> None:
    w = world
    tool = make_cnitool(w.tool["cnitool"], w.topo.name, "node1", w.work / "cnitool", NETWORKS)
    pod = st.ns_name(w.topo.name, "rt-c1")
    state = st.LabState.load(w.topo.name)
    assert state is not None
    state.namespaces.append(pod)  # write-ahead: `lab down` removes it whatever happens here
    state.save()
    netns.create(pod)
    try:
        _cnitool_story(w, tool, pod)
    finally:
        for network in NETWORKS:  # a failed test still releases what it made
            tool("del", network, pod, "net1" if network == "podnet2" else "eth0")
        netns.remove(pod)
    assert_clean(w)
    assert not any(w.work.joinpath("cnitool", "cnitool-cache").rglob("*.json")), (
        "cnitool's cache kept a result"
    )


def _cnitool_story(w: World, tool: Cnitool, pod: str) -> None:
    from podnet.verify.probe import tcp_probe

    added = tool("add", "podnet", pod)
    assert added.returncode == 0, added.stderr
    address = re.search(r'"address": "([0-9.]+)/32"', added.stdout)
    assert address is not None, added.stdout
    probe = tcp_probe(pod, st.ns_name(w.topo.name, "node2-p1"), w.server_ip, port=PORT)
    assert probe.ok and address.group(1) in probe.detail, probe.detail
    assert tool("check", "podnet", pod).returncode == 0
    second = tool("add", "podnet2", pod, "net1")
    assert second.returncode == 0, second.stderr
    assert tool("check", "podnet", pod).returncode == 0  # the first still owns the default route
    assert tool("del", "podnet2", pod, "net1").returncode == 0
    assert tool("check", "podnet", pod).returncode == 0, "DEL of the second attachment broke the first"
    for _ in range(2):
        gone = tool("del", "podnet", pod)
        assert gone.returncode == 0, gone.stderr
    assert_clean(w)
    again = tool("add", "podnet", pod)  # the same container wired again after its DEL
    assert again.returncode == 0, again.stderr
    assert tcp_probe(pod, st.ns_name(w.topo.name, "node2-p1"), w.server_ip, port=PORT).ok
    assert tool("del", "podnet", pod).returncode == 0


# ---- podman ---------------------------------------------------------------------------------------

PODMAN_STORY = r"""
NETS=(--network podnet --network podnet2)
podman run -d --name c1 "${RUN[@]}" "${NETS[@]}" "${ROOTFS[@]}" /bin/busybox sleep 120 >/dev/null
echo "ADDR $(podman exec c1 /bin/busybox ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)"
echo "ADDR2 $(podman exec c1 /bin/busybox ip -4 -o addr show eth1 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)"
echo "DEFAULT $(podman exec c1 /bin/busybox ip route show default | tr '\n' ' ')"
echo "SANDBOX $(podman inspect -f '{{.NetworkSettings.SandboxKey}}' c1)"
echo "TCP $(podman exec c1 /bin/busybox sh -c "echo hi | /bin/busybox nc -w 3 $SERVER $PORT")"
podman stop -t 0 c1 >/dev/null
podman start c1 >/dev/null
echo "TCP-AFTER-RESTART $(podman exec c1 /bin/busybox sh -c "echo hi | /bin/busybox nc -w 3 $SERVER $PORT")"
podman stop -t 0 c1 >/dev/null
podman rm c1 >/dev/null
echo DONE
"""


@pytest.mark.parametrize("launch", ["nsenter", "ip-netns-exec"])
def test_podman_runs_restarts_and_removes_a_container_on_podnet(world: World, launch: str) -> None:
    w = world
    podman = make_podman(w.tool, w.topo.name, "node1", w.work / f"podman-{launch}", NETWORKS)
    try:
        with echo_server(w, connections=2) as clients:
            out = podman.script(PODMAN_STORY, launch, {"SERVER": w.server_ip, "PORT": str(PORT)})
        assert out.returncode == 0 and "DONE" in out.stdout, f"{out.stdout}\n{out.stderr[-3000:]}"
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        address = lines["ADDR"].strip()
        assert address and lines["ADDR2"].strip() and address != lines["ADDR2"].strip(), lines
        # one attachment owns the default route: the first one podman added (it adds both at once)
        defaults = re.findall(r"default via \S+ dev (eth\d)", lines["DEFAULT"])
        assert len(defaults) == 1, lines
        owner = address if defaults[0] == "eth0" else lines["ADDR2"].strip()
        assert lines["TCP"].strip() == f"pong {owner}", lines  # node2's pod saw the pod's own address
        assert lines["TCP-AFTER-RESTART"].startswith("pong "), lines
        assert clients[0] == owner
        assert not Path(lines["SANDBOX"].strip()).exists(), "the container's netns path leaked to the host"
    finally:
        podman.cleanup()
    assert_clean(w)


def test_a_container_that_vanishes_without_del_is_shown_stale_and_reaped(world: World) -> None:
    """``ctr run --cni`` followed by kill and rm never calls DEL; here conmon and the container
    are killed behind podman's back and the runtime's mount namespace (the only thing pinning
    the container's netns) goes away with the container still wired. The agent's status lists
    the endpoint as stale until its GC (endpointGCInterval) frees it."""
    w = world
    podman = make_podman(w.tool, w.topo.name, "node1", w.work / "podman-vanish", ("podnet",))
    body = r"""
podman run -d --name gone "${RUN[@]}" --network podnet "${ROOTFS[@]}" /bin/busybox sleep 120 >/dev/null
echo "ID $(podman inspect -f '{{.Id}}' gone)"
echo "ADDR $(podman exec gone /bin/busybox ip -4 -o addr show eth0 | grep -o 'inet [0-9.]*' | cut -d' ' -f2)"
kill -9 "$(podman inspect -f '{{.State.ConmonPid}}' gone)"   # no conmon: no cleanup, no DEL
kill -9 "$(podman inspect -f '{{.State.Pid}}' gone)"
"""
    reaped_before = node1_state(w)["reaped"]
    try:
        out = podman.script(body, "nsenter")
        assert out.returncode == 0, out.stderr[-3000:]
        fields = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        owner, address = f"{fields['ID'].strip()}/eth0", fields["ADDR"].strip()
        seen_stale: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = node1_state(w)
            seen_stale = seen_stale or now["stale"]
            if now["reaped"] > reaped_before:
                break
            time.sleep(0.2)
        assert now["reaped"] == reaped_before + 1 and now["lastReaped"] == [owner], now
        if seen_stale:  # status showed it between its namespace going and the GC
            assert seen_stale[0]["addresses"] == [f"{address}/32"], seen_stale
        assert_clean(w)
    finally:
        podman.cleanup()
