"""Links: veth pairs, the VXLAN device, up/down, delete; plus "can this kernel make a <kind>?".

A VXLAN device's VNI, port, local address, lower device and learning flag cannot be changed in
place, so ``ensure_vxlan`` recreates the device when one of them differs and only updates MAC and
MTU otherwise. Only devices whose names podnet owns are ever created or deleted here.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.kernel import is_exists, is_gone
from podnet.model import IPAddress


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


@dataclass(frozen=True)
class VxlanSpec:
    """``ip link add <name> type vxlan id <vni> dstport <port> local <local> dev <underlay>
    nolearning`` with ``address <mac> mtu <mtu>``."""

    name: str
    vni: int
    port: int
    local: IPAddress
    underlay_index: int
    mac: str
    mtu: int


def ensure_vxlan(ipr: IPRoute, spec: VxlanSpec) -> int:
    """The VXLAN device as ``spec`` says, up; recreated when an immutable attribute differs."""
    index = link_index(ipr, spec.name)
    if index is not None and _vxlan_fixed(ipr, index) != _spec_fixed(spec):
        delete_link(ipr, spec.name)
        index = None
    if index is None:
        family = "vxlan_local" if spec.local.version == 4 else "vxlan_local6"
        ipr.link(
            "add",
            ifname=spec.name,
            kind="vxlan",
            vxlan_id=spec.vni,
            vxlan_port=spec.port,
            vxlan_link=spec.underlay_index,
            vxlan_learning=0,
            address=spec.mac,
            **{family: str(spec.local)},
        )
        index = link_index(ipr, spec.name)
        assert index is not None, f"vxlan device {spec.name} vanished after creation"
    msg = link_msg(ipr, index)
    if str(msg.get_attr("IFLA_ADDRESS")).lower() != spec.mac.lower():
        ipr.link("set", index=index, address=spec.mac)
    ensure_mtu(ipr, index, spec.mtu)
    ensure_up(ipr, index)
    return index


def _spec_fixed(spec: VxlanSpec) -> tuple[object, ...]:
    return (spec.vni, spec.port, str(spec.local), spec.underlay_index, 0)


def _vxlan_fixed(ipr: IPRoute, index: int) -> tuple[object, ...] | None:
    info = link_msg(ipr, index).get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
    return (
        data.get_attr("IFLA_VXLAN_ID"),
        data.get_attr("IFLA_VXLAN_PORT"),
        str(ipaddress.ip_address(local)) if local else None,
        data.get_attr("IFLA_VXLAN_LINK"),
        data.get_attr("IFLA_VXLAN_LEARNING"),
    )


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
    """Whether this kernel can create links of ``kind`` (vxlan, geneve, ...): loaded or built-in
    module, else a trial device inside a throwaway namespace (never in the caller's namespace)."""
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
            extra: dict[str, Any] = {"geneve_id": 1, "geneve_remote": "192.0.2.1"} if kind == "geneve" else {}
            if kind == "vxlan":
                extra = {"vxlan_id": 1}
            try:
                ipr.link("add", ifname="probe0", kind=kind, **extra)
            except NetlinkError as exc:
                if exc.code in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL):
                    return False
                raise
            return True
    finally:
        with contextlib.suppress(OSError):
            pyroute2_netns.remove(name)
