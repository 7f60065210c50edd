"""Kernel-tier fixtures: a real etcd (Debian etcd-server 3.4) on 127.0.0.1 with free ports.

The etcd runs as a child of the test process, its data dir and log in ``tmp_path``; teardown stops
it by PID (``EtcdProcess.stop``), also when the test failed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest
from cninode import make_node  # noqa: F401  (a fixture for every kernel test)

from podnet.store.client import Store
from podnet.store.server import EtcdProcess, start_etcd


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """free_port() -> a TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_port


@pytest.fixture
def etcd(tmp_path: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """A fresh single-member etcd on 127.0.0.1; stopped by PID at teardown."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the README's test command as root")
    client, peer = free_port(), free_port()
    proc = start_etcd(
        name="pnt-etcd",
        data_dir=tmp_path / "etcd-data",  # type: ignore[operator]
        client_urls=[f"http://127.0.0.1:{client}"],
        peer_url=f"http://127.0.0.1:{peer}",
        netns=None,
        log_path=tmp_path / "etcd.log",  # type: ignore[operator]
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def store(etcd: EtcdProcess) -> Iterator[Store]:
    with Store(etcd.endpoint, timeout=3.0) as client:
        yield client
