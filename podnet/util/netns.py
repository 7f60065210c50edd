"""Network namespaces by name: create, remove, enter briefly, list the processes inside.

``entered(name)`` switches the *calling thread* into a namespace for a short, synchronous block
(sysctl writes under /proc/sys/net, opening a socket) and always switches back. Netlink work uses
``IPRoute(netns=name)`` instead (one socket bound to the namespace, no thread switching).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pyroute2 import netns as _netns

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_DIR = Path("/run/netns")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> bool:
    """Create namespace ``name`` with its loopback up; True if made now, False if it existed."""
    if exists(name):
        return False
    _netns.create(name)
    from pyroute2 import IPRoute

    with IPRoute(netns=name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    return True


def listed(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return None


def pids_in(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``name`` (what `ip netns pids` prints)."""
    ino = inode(name)
    if ino is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == ino:
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_pids(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM the given PIDs, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in alive:
        _reap(pid)


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def remove(name: str) -> None:
    """Kill the processes inside ``name`` (they are ours: the namespace is ours) and delete it."""
    if not exists(name):
        return
    kill_pids(pids_in(name))
    with contextlib.suppress(FileNotFoundError):
        _netns.remove(name)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run a short block with the calling thread inside namespace ``name``."""
    _netns.pushns(name)
    try:
        yield
    finally:
        _netns.popns()


def write_sysctl(name: str, settings: dict[str, str]) -> None:
    """Write sysctls (``net.ipv4.ip_forward`` style keys) inside namespace ``name`` only."""
    with entered(name):
        for key, value in settings.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            path.write_text(str(value))


_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter_for_good(path: str | Path) -> None:
    """Move the calling thread into the namespace at ``path`` and stay: only for a process of
    its own (the lab's forwarder) before it starts any thread, never in a shared one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def netlink_socket_in(fd: int) -> IPRoute:
    """A pyroute2 netlink socket bound to the namespace behind ``fd``, made without forking a
    helper (pyroute2's ``IPRoute(netns=...)`` forks a process for the same thing, ~8 ms per pod)."""
    from pyroute2 import IPRoute

    return made_in(fd, IPRoute)


def made_in(fd: int, make: Callable[[], T]) -> T:
    """``make()`` (a socket) run with the calling thread in the namespace behind ``fd``: the
    thread switches only for the instant of the call and always switches back; the socket stays
    in the namespace it was made in."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
        try:
            return make()
        finally:
            _setns(own)
    finally:
        os.close(own)
