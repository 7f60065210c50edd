"""A pod's network namespace as the agent holds it: an open descriptor, never a path from a call.

The CNI plugin opens ``CNI_NETNS`` in the runtime's mount namespace and passes the descriptor
(SCM_RIGHTS); for its own later work (a route MTU change, GC, the reaper) the agent finds a
namespace again by the identity it recorded (``dev:inode``), never by trusting a path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass


class EndpointError(Exception):
    """Wiring a pod interface failed; the message names the interface, the pod and the reason."""


class NetnsNotFoundError(EndpointError):
    """The pod's network namespace cannot be opened (or is not a pod's)."""


@dataclass(frozen=True)
class PodNetns:
    """A pod's network namespace as the agent holds it: an open descriptor (handed over by the CNI
    plugin, which opened ``CNI_NETNS`` in the runtime's mount namespace, or found by the agent
    itself) and the runtime's name for it, for messages and the result's ``sandbox``. The agent
    never opens a path a caller gave it; whoever made the descriptor closes it."""

    fd: int
    label: str

    def identity(self) -> str:
        """``dev:inode`` of the namespace: stable while it lives, recorded with the attachment."""
        st = os.fstat(self.fd)
        return f"{st.st_dev}:{st.st_ino}"


@contextlib.contextmanager
def opened(path: str) -> Iterator[PodNetns]:
    """Open a namespace file (a bind mount or /proc/PID/ns/net) as a ``PodNetns``. For the plugin
    side, tests and namespaces the agent found itself; never for a path from a CNI call. Opening
    never blocks (a FIFO or device given as the path is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise NetnsNotFoundError(
            f"pod network namespace {path} cannot be opened: {exc.strerror}; the container is probably gone"
        ) from None
    try:
        yield PodNetns(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def find(identity: str, recorded_path: str = "") -> Iterator[PodNetns | None]:
    """The live namespace recorded as ``identity`` (``dev:inode``), for work the agent does on its
    own (a route MTU change, GC): the recorded path when ``stat`` shows it still is that namespace
    (a runtime that shares the agent's mount namespace), else a process inside it
    (``/proc/PID/ns/net``). Nothing is opened before its identity matched. ``None``: the pod is
    gone, or only reachable from a mount namespace the agent cannot see and holds no process."""
    found = False
    for path in _paths_of(identity, recorded_path):
        try:
            with opened(path) as netns:
                if netns.identity() != identity:  # replaced between stat and open
                    continue
                found = True
                yield netns
                return
        except NetnsNotFoundError:
            if found:
                raise
    yield None


def _paths_of(identity: str, recorded_path: str) -> Iterator[str]:
    """Paths that ``stat`` shows are the namespace ``identity``, best first."""

    def same(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        return f"{st.st_dev}:{st.st_ino}" == identity

    if not identity:
        return
    if recorded_path and same(recorded_path):
        yield recorded_path
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        path = f"/proc/{pid}/ns/net"
        if same(path):
            yield path


def checked_fd(netns: PodNetns) -> int:
    """The namespace's descriptor after checking it is a network namespace, not the node's own."""
    fd, label = netns.fd, netns.label
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise NetnsNotFoundError(f"{label}: the namespace descriptor is not usable: {exc.strerror}") from None
    if not stat.S_ISREG(mode):  # an nsfs file (bind mount or /proc/PID/ns/net)
        raise NetnsNotFoundError(f"{label} is not a network namespace (not an nsfs file)")
    _refuse_own_namespace(fd, label)
    return fd


def _refuse_own_namespace(fd: int, netns_path: str) -> None:
    """A pod namespace is never the node's own (nor the machine's): a runtime or lab bug passing
    /proc/1/ns/net must not get pod routes written into the host."""
    target = os.fstat(fd)
    for own in ("/proc/self/ns/net", "/proc/1/ns/net"):
        try:
            mine = os.stat(own)
        except OSError:
            continue
        if (mine.st_dev, mine.st_ino) == (target.st_dev, target.st_ino):
            raise NetnsNotFoundError(
                f"CNI_NETNS {netns_path} is the node's own network namespace, not a pod's; "
                "the runtime must pass the pod sandbox's namespace"
            )
