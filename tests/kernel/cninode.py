"""A CNI "node" for the kernel tier: a namespace with the router IP, a real ``CniHandler`` and
its API socket, and the real ``podnet-cni`` binary run as a container runtime runs it."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from podnet import owned
from podnet.agent import api
from podnet.agent.cni_handler import CniHandler
from podnet.cni import spec
from podnet.ipam.cluster_pool import MultiCIDRAllocator
from podnet.util import netns

ROUTER = ipaddress.IPv4Address("10.77.0.1")
ROUTE_MTU = 1400
CONF = {"cniVersion": "1.1.0", "name": "podnet", "type": "podnet"}


@dataclass
class Node:
    ns: str
    sock: Path
    handler: CniHandler
    allocator: MultiCIDRAllocator
    plugin: Path

    def env(self, command: str, cid: str, netns_path: str, ifname: str = "eth0") -> dict[str, str]:
        """The CNI_* environment a runtime gives the plugin, pointed at this node's agent."""
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
            spec.SOCKET_ENV: str(self.sock),
        }

    def cni(
        self,
        command: str,
        cid: str = "",
        netns_path: str = "",
        ifname: str = "eth0",
        config: dict[str, Any] | None = None,
        stdin: bytes | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        env = self.env(command, cid, netns_path, ifname)
        data = stdin if stdin is not None else json.dumps(config or CONF).encode()
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, str(self.plugin)],
            input=data,
            env=env,
            capture_output=True,
            timeout=60,
        )
        out = proc.stdout.decode().strip()
        return proc.returncode, (json.loads(out) if out else None)

    def lxc_links(self) -> list[str]:
        with IPRoute(netns=self.ns, flags=0) as ipr:
            names = [link.get("IFLA_IFNAME") for link in ipr.link("dump")]
        return sorted(n for n in names if n.startswith(owned.ENDPOINT_PREFIX))


def pod_path(ns: str) -> str:
    return f"/run/netns/{ns}"


@pytest.fixture
def make_node(
    netns_factory: Callable[[str], str], tmp_path: Path, plugin: Path
) -> Iterator[Callable[..., Node]]:
    servers: list[api.ApiServer] = []

    def make(cidr: str = "10.77.0.0/24", fail_after_ipam: bool = False) -> Node:
        ns = netns_factory(f"node{len(servers)}")
        with IPRoute(netns=ns, flags=0) as ipr:
            ipr.link("add", ifname=owned.HOST_DEV, kind="veth", peer={"ifname": owned.NET_DEV})
            host = ipr.link_lookup(ifname=owned.HOST_DEV)[0]
            ipr.addr("add", index=host, address=str(ROUTER), prefixlen=32)
            for name in (owned.HOST_DEV, owned.NET_DEV):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        netns.write_sysctl(ns, {"net.ipv4.ip_forward": "1"})
        allocator = MultiCIDRAllocator([ipaddress.IPv4Network(cidr)])  # reserves .1, the router IP
        handler = CniHandler(
            ns,
            allocator,
            ROUTE_MTU,
            tmp_path / f"store{len(servers)}",
            fail_after_ipam=fail_after_ipam,
        )
        sock = tmp_path / f"agent{len(servers)}.sock"
        servers.append(api.serve(sock, handler))
        return Node(ns=ns, sock=sock, handler=handler, allocator=allocator, plugin=plugin)

    yield make
    for server in servers:
        server.close()
