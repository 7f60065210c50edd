"""Idempotent netlink helpers, one module per kernel object kind.

Every ``ensure_*`` treats "already there and equal" as success and updates what differs;
every ``delete_*`` treats "already gone" (ENOENT, ESRCH, ENODEV) as success. They take an open
pyroute2 ``IPRoute`` (the caller chooses the namespace) and never open one themselves.
"""

from __future__ import annotations

import errno

from pyroute2.netlink.exceptions import NetlinkError

GONE = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL})


def is_gone(exc: NetlinkError) -> bool:
    """True when the error says the object does not exist (success for a delete)."""
    return exc.code in GONE


def is_exists(exc: NetlinkError) -> bool:
    return exc.code == errno.EEXIST
