"""Idempotent netlink helpers, one module per kernel object kind.

Every ``ensure_*`` treats "already there and equal" as success and updates what differs;
every ``delete_*`` treats "already gone" (ENOENT, ESRCH, ENODEV) as success. They take an open
pyroute2 ``IPRoute`` (the caller chooses the namespace) and never open one themselves; the one
exception is ``link.link_kind_supported``, which may try a device in a throwaway namespace of its
own. They speak in ``podnet.datapath.objects`` values and never import the planners.
"""

from __future__ import annotations

import errno
import socket

from pyroute2.netlink.exceptions import NetlinkError

GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL})


def is_gone(exc: NetlinkError) -> bool:
    """True when the error says the object does not exist (success for a delete)."""
    return exc.code in GONE


def is_exists(exc: NetlinkError) -> bool:
    return exc.code == errno.EEXIST


def af(family: int) -> int:
    """``socket.AF_INET`` for 4, ``socket.AF_INET6`` for 6."""
    return socket.AF_INET if family == 4 else socket.AF_INET6
