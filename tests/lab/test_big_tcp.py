"""BIG TCP in a lab (enableIPv4BIGTCP, issue 31): with it on, the nodes' underlay devices and both
ends of every pod veth carry 192 KiB GSO/GRO sizes, status says ``IPv4 BIG TCP: Enabled
[196608]``, and a capture on the receiving node's underlay shows pod-to-pod TCP frames above
64 KiB, with BPF and with Legacy host routing. Turned off live, the underlay goes back to 64 KiB
frames and the pods (which keep their veths' sizes until they are re-created) still reach each
other."""

from __future__ import annotations

import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import PODNET, _wait_for_line, config_set, pod_ips, podnet_json, wait_for
from pluginhelpers import l2_lab_file

from podnet.datapath.bigtcp import BIG_TCP_SIZE
from podnet.datapath.kernel.rtnl import Rtnl
from podnet.lab import state as st
from podnet.lab.topology import Topology, load_topology
from podnet.util.proc import stop

pytestmark = pytest.mark.lab

LEGACY = 65536
ETH_HLEN = 14


@pytest.fixture(scope="module")
def big_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    name, path = l2_lab_file(tmp_path_factory.mktemp("bigtcp"), "bigtcp", pods=1)
    try:
        res = subprocess.run(
            [PODNET, "lab", "up", str(path), "--set", "enableIPv4BIGTCP=true"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        yield load_topology(str(path))
    finally:
        subprocess.run([PODNET, "lab", "down", name], capture_output=True, timeout=240)


def _sizes(topo: Topology, host: str, ifname: str) -> tuple[int, int | None]:
    """(gso_ipv4_max_size, gro_ipv4_max_size) of a link in a lab host."""
    with Rtnl.in_netns(st.ns_name(topo.name, host)) as sock:
        link = sock.get_link(ifname)
        assert link is not None, (host, ifname)
        sizes = sock.get_sizes(link.index)
        assert sizes is not None and sizes.gso_ipv4 is not None, (host, ifname)
        return sizes.gso_ipv4, sizes.gro_ipv4


def _pod_veth(topo: Topology, node: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, node), "ip", "-o", "link", "show"],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    names = [line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines() if ": lxc" in line]
    assert len(names) == 1, out.stdout
    return names[0]


def _largest_frame(topo: Topology, tmp_path: Path, node: str, src: str, dst: str, dst_ip: str) -> int:
    """The largest TCP frame (its length on the wire as the kernel handed it to the capture)
    seen on ``node``'s eth0 while ``src`` sends to ``dst`` with iperf3 for 2 s."""
    pcap = tmp_path / f"{node}-{src}.pcap"
    ns = st.ns_name(topo.name, node)
    dump = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-nn", "-i", "eth0", "-s", "96", "-c", "2000",
         "-w", str(pcap), "tcp port 5299"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = subprocess.Popen(
        ["ip", "netns", "exec", st.ns_name(topo.name, dst), "iperf3", "-s", "-1", "-p", "5299"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert "listening" in _wait_for_line(dump, "listening", timeout=10)
        wait_for(lambda: _listening(topo, dst, 5299), f"iperf3 listening in {dst}", timeout=15)
        sent = subprocess.run(
            ["ip", "netns", "exec", st.ns_name(topo.name, src), "iperf3", "-c", dst_ip, "-p", "5299",
             "-t", "2", "--connect-timeout", "3000"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert sent.returncode == 0, f"iperf3 {src} -> {dst}: {sent.stdout}{sent.stderr}"
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()
        stop(server)
    return max(_frame_lengths(pcap.read_bytes()), default=0)


def _listening(topo: Topology, host: str, port: int) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", st.ns_name(topo.name, host), "ss", "-Htln", f"sport = :{port}"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return bool(out.stdout.strip())


def _frame_lengths(data: bytes) -> Iterator[int]:
    """The original length of every record of a classic pcap file."""
    offset = 24  # the global header
    while offset + 16 <= len(data):
        _sec, _usec, included, original = struct.unpack_from("=IIII", data, offset)
        yield original
        offset += 16 + included


def _status(topo: Topology) -> dict[str, Any]:
    return podnet_json("status", "--lab", topo.name, "-o", "json")["nodes"]  # type: ignore[no-any-return]


def test_pod_frames_above_64k_cross_the_underlay_in_both_host_routings(
    big_lab: Topology, tmp_path: Path
) -> None:
    topo = big_lab
    ips = pod_ips(topo)
    for node, doc in _status(topo).items():
        big = doc["mtu"]["bigTCP"]["ipv4"]
        assert big == {"size": BIG_TCP_SIZE, "enabled": True, "problem": None}, (node, big)
    for node in ("node1", "node2"):
        assert _sizes(topo, node, "eth0") == (BIG_TCP_SIZE, BIG_TCP_SIZE)
        assert _sizes(topo, node, _pod_veth(topo, node)) == (BIG_TCP_SIZE, BIG_TCP_SIZE)
        assert _sizes(topo, f"{node}-p1", "eth0") == (BIG_TCP_SIZE, BIG_TCP_SIZE)
    text = subprocess.run(
        [PODNET, "status", "--lab", topo.name], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "IPv4 BIG TCP:" in text and "Enabled [196608]" in text, text
    # BPF host routing (the default), then Legacy: frames above 64 KiB arrive on the underlay
    bpf = _largest_frame(topo, tmp_path, "node2", "node1-p1", "node2-p1", ips["node2-p1"])
    assert bpf > LEGACY + ETH_HLEN, f"largest pod frame with BPF host routing: {bpf}"
    switched = config_set(topo.name, "bpf.hostLegacyRouting=true")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    legacy = _largest_frame(topo, tmp_path, "node2", "node1-p1", "node2-p1", ips["node2-p1"])
    assert legacy > LEGACY + ETH_HLEN, f"largest pod frame with Legacy host routing: {legacy}"
    assert podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")["ok"]


def test_big_tcp_turned_off_live_gives_the_underlay_back_its_64k(big_lab: Topology, tmp_path: Path) -> None:
    topo = big_lab
    switched = config_set(topo.name, "enableIPv4BIGTCP=false")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    for node, doc in _status(topo).items():
        assert doc["mtu"]["bigTCP"]["ipv4"]["enabled"] is False, (node, doc["mtu"])
        assert _sizes(topo, node, "eth0") == (LEGACY, LEGACY), node
    ips = pod_ips(topo)
    # the pods' veths keep 192 KiB until the pods are made again; the node's device cuts them
    frame = _largest_frame(topo, tmp_path, "node2", "node1-p1", "node2-p1", ips["node2-p1"])
    assert 0 < frame <= LEGACY + ETH_HLEN, f"largest pod frame on the underlay with BIG TCP off: {frame}"
    assert podnet_json("connectivity", "test", "--lab", topo.name, "-o", "json")["ok"]
