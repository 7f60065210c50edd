"""Links: veth pairs, up/down, MTU, delete; plus "can this kernel make a <kind>?". A tunnel
protocol's own device is made by its module (``podnet.datapath.tunnels``). Only devices whose
names podnet owns are ever created or deleted here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel import is_exists, is_gone


def link_index(ipr: IPRoute, ifname: str) -> int | None:
    """Index of ``ifname`` or None when there is no such link."""
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def link_msg(ipr: IPRoute, index: int) -> Any:
    return ipr.link("get", index=index)[0]


def link_mtu(ipr: IPRoute, index: int) -> int:
    return int(link_msg(ipr, index).get_attr("IFLA_MTU"))


def ensure_up(ipr: IPRoute, index: int) -> bool:
    """Set the link up; True when it was down."""
    msg = link_msg(ipr, index)
    if msg["flags"] & 1:  # IFF_UP
        return False
    ipr.link("set", index=index, state="up")
    return True


def ensure_mtu(ipr: IPRoute, index: int, mtu: int) -> bool:
    if link_mtu(ipr, index) == mtu:
        return False
    ipr.link("set", index=index, mtu=mtu)
    return True


def ensure_veth_pair(ipr: IPRoute, name: str, peer: str) -> tuple[int, int]:
    """Both ends of a veth pair in the socket's namespace, both up; returns their indexes.
    A lone end (its peer deleted or renamed) is removed and the pair made again."""
    index, peer_index = link_index(ipr, name), link_index(ipr, peer)
    if index is not None and (peer_index is None or _veth_peer(ipr, index) != peer_index):
        delete_link(ipr, name)
        index = None
    if index is None:
        if peer_index is not None:
            delete_link(ipr, peer)
        try:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
        except NetlinkError as exc:
            if not is_exists(exc):
                raise
    index, peer_index = link_index(ipr, name), link_index(ipr, peer)
    assert index is not None and peer_index is not None, f"veth pair {name}/{peer} vanished after creation"
    ensure_up(ipr, peer_index)
    ensure_up(ipr, index)
    return index, peer_index


def _veth_peer(ipr: IPRoute, index: int) -> int | None:
    msg = link_msg(ipr, index)
    link = msg.get_attr("IFLA_LINK")
    return int(link) if link is not None else None


def delete_link(ipr: IPRoute, ifname: str) -> bool:
    """Delete ``ifname``; True when something was deleted, False when it was already gone."""
    index = link_index(ipr, ifname)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if is_gone(exc):
            return False
        raise
    return True


@functools.cache  # the kernel's abilities do not change while podnet runs
def link_kind_supported(kind: str) -> bool:
    """Whether this kernel can create links of ``kind``: loaded or built-in module, else a trial
    device inside a throwaway namespace (never in the caller's namespace)."""
    if Path(f"/sys/module/{kind}").exists():
        return True
    with contextlib.suppress(OSError):
        if any(line.split()[0] == kind for line in Path("/proc/modules").read_text().splitlines() if line):
            return True
    return _trial_link(kind)


def _trial_link(kind: str) -> bool:
    from pyroute2 import netns as pyroute2_netns

    name = f"podnet-probe-{os.getpid()}-{secrets.token_hex(3)}"
    pyroute2_netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            # a kind whose module is there but refuses a bare device (EINVAL: a tunnel wants its
            # id) is tried once more with ``<kind>_id`` (the tunnel kinds' spelling in pyroute2)
            for extra in ({}, {f"{kind}_id": 1}):
                try:
                    ipr.link("add", ifname="probe0", kind=kind, **extra)
                except NetlinkError as exc:
                    if exc.code in (errno.EOPNOTSUPP, errno.ENOENT):
                        return False
                    if exc.code == errno.EINVAL:
                        continue
                    raise
                return True
            return False
    finally:
        with contextlib.suppress(OSError):
            pyroute2_netns.remove(name)
