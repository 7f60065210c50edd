"""Sysctls under /proc/sys/net, written only inside the namespace the caller names.

``netns=None`` means the calling process's own network namespace (the agent on a real node, or
an agent started inside a lab node namespace); a name means that namespace, entered briefly.
Values are read first and written only when they differ. Writing with ``netns=None`` while the
calling thread sits in the machine's initial namespace is refused unless the caller says it runs
on a real node (``allow_initial_netns=True``): a test or lab bug must never change the host.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from podnet.util import netns as netns_util


def _path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


@contextlib.contextmanager
def _inside(netns: str | None) -> Iterator[None]:
    if netns is None:
        yield
    else:
        with netns_util.entered(netns):
            yield


def read_sysctl(key: str, netns: str | None = None) -> str:
    with _inside(netns):
        return _path(key).read_text().strip()


def in_initial_netns() -> bool:
    """True when the calling thread may be in the machine's initial network namespace.

    A namespace listed under /run/netns is never the initial one; else compare with PID 1's
    namespace; where that is unreadable (sandboxes), assume the worst (True)."""
    here = os.stat("/proc/thread-self/ns/net").st_ino
    if here in {netns_util.inode(name) for name in netns_util.listed()}:
        return False
    with contextlib.suppress(OSError):
        return here == os.stat("/proc/1/ns/net").st_ino
    return True


def socket_netns(ipr: object) -> str | None:
    """The namespace name a pyroute2 ``IPRoute(netns=...)`` socket is bound to, if any."""
    status = getattr(ipr, "status", None)
    return status.get("netns") or None if isinstance(status, dict) else None


def refuse_initial_netns(ipr: object, what: str, allow_initial_netns: bool) -> None:
    """Raise unless ``ipr`` is bound to a named namespace, the thread is outside the machine's
    initial namespace, or the caller declared a real node (``allow_initial_netns``)."""
    if allow_initial_netns or socket_netns(ipr) is not None or not in_initial_netns():
        return
    raise PermissionError(
        f"refusing to {what} in the machine's initial network namespace; open IPRoute(netns=<node>) "
        "or pass allow_initial_netns=True when running on a real node"
    )


def ensure_sysctls(
    settings: Mapping[str, str], netns: str | None = None, allow_initial_netns: bool = False
) -> list[str]:
    """Apply ``settings`` (``net.ipv4.ip_forward`` style keys); returns the keys that changed."""
    changed: list[str] = []
    if netns is None and not allow_initial_netns and in_initial_netns():
        raise PermissionError(
            f"refusing to write {', '.join(settings)} in the machine's initial network namespace; "
            "name the node namespace, or pass allow_initial_netns=True when running on a real node"
        )
    with _inside(netns):
        for key, value in settings.items():
            path = _path(key)
            if path.read_text().strip() != str(value):
                path.write_text(str(value))
                changed.append(key)
    return changed
