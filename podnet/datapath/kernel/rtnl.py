"""A small synchronous rtnetlink socket for the CNI hot path: the dozen requests of one pod's ADD
or DEL, packed with ``struct`` and answered by the kernel's ACK.

Design fact: pyroute2 spends ~0.18 ms of Python per request (its message classes and its asyncio
transport) where the kernel needs ~0.002 ms; an ADD makes nine requests, so pyroute2 alone was
a third of the agent's share of a pod start (docs/cni.md "Where an ADD's time goes"). pyroute2
stays the netlink library for everything else (reads, dumps, the agent's rounds); this module
writes only links (veth pairs, up/down, rename, group, delete), addresses and routes, and reads
one link. Errors are pyroute2's ``NetlinkError`` with the kernel's extended-ACK text, so callers
classify them with ``is_gone``/``is_exists`` as everywhere else.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from podnet.datapath.objects import Route
from podnet.util.netns import made_in

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# netlink
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ACK attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
# rtnetlink message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_NEWNEIGH = 28
NDA_DST = 1
NTF_PROXY = 0x08
NUD_PERMANENT = 0x80
# attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO, IFLA_GROUP, IFLA_NET_NS_FD = (
    1,
    3,
    4,
    5,
    18,
    27,
    28,
)
# packet sizes a link sends and builds (BIG TCP): GSO/GRO for IPv6 (and the limit for IPv4 before
# Linux 6.3), the TSO limit its driver has, and IPv4's own GSO/GRO sizes (Linux 6.3 and later)
IFLA_GSO_MAX_SIZE, IFLA_GRO_MAX_SIZE, IFLA_TSO_MAX_SIZE = 41, 58, 59
IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE = 63, 64
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_METRICS, RTA_TABLE = 1, 4, 5, 7, 8, 15
RTAX_MTU = 2
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, proto, scope, type, flags
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_NLA = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    size = _NLA.size + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in ``data`` from ``offset`` (type without the nested/byte-order bits)."""
    found: dict[int, bytes] = {}
    while offset + _NLA.size <= len(data):
        size, kind = _NLA.unpack_from(data, offset)
        if size < _NLA.size:
            break
        found[kind & 0x3FFF] = data[offset + _NLA.size : offset + size]
        offset += (size + 3) & ~3
    return found


def _size_attrs(ipv6: int | None, ipv4: int | None) -> bytes:
    """The GSO/GRO size attributes of a link request (BIG TCP); nothing for a family left as is."""
    body = b""
    if ipv6 is not None:
        body += _u32(IFLA_GSO_MAX_SIZE, ipv6) + _u32(IFLA_GRO_MAX_SIZE, ipv6)
    if ipv4 is not None:
        body += _u32(IFLA_GSO_IPV4_MAX_SIZE, ipv4) + _u32(IFLA_GRO_IPV4_MAX_SIZE, ipv4)
    return body


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


@dataclass(frozen=True)
class LinkSizes:
    """The largest packets a link sends as one (GSO) and builds from received ones (GRO), per
    family, and the largest its driver takes (TSO). ``gso_ipv4``/``gro_ipv4`` are None on a
    kernel without IPv4 BIG TCP (before 6.3); there IPv4 uses ``gso``."""

    gso: int
    gro: int
    tso_max: int
    gso_ipv4: int | None
    gro_ipv4: int | None


@dataclass(frozen=True)
class Link:
    """What the hot path needs to know of a link."""

    index: int
    name: str
    mac: str
    kind: str | None  # IFLA_INFO_KIND: "veth", ...
    peer_index: int | None  # IFLA_LINK: a veth's peer (its index in the peer's namespace)


class Rtnl:
    """One NETLINK_ROUTE socket, made in the caller's namespace or in the one behind ``netns_fd``
    (``podnet.util.netns.made_in``: the thread switches for the instant of ``socket()`` only)."""

    def __init__(self, netns_fd: int | None = None) -> None:
        def make() -> socket.socket:
            return socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )

        self._sock = make() if netns_fd is None else made_in(netns_fd, make)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # the kernel says why it refused
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # ACKs without our request echoed
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._seq = itertools.count(1)

    @classmethod
    def in_netns(cls, name: str | None) -> Rtnl:
        """A socket in the named namespace (``/run/netns/<name>``), or in this one for None."""
        if not name:
            return cls()
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return cls(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport -----------------------------------------------------------------------------

    def request(self, kind: int, flags: int, body: bytes) -> bytes | None:
        """Send one request; the reply's payload for a GET, None for an ACK. Raises NetlinkError."""
        seq = next(self._seq)
        self._sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HDR.size <= len(data):
                size, mtype, mflags, mseq, _pid = _HDR.unpack_from(data, offset)
                if size < _HDR.size:
                    raise NetlinkError(errno.EBADMSG, "truncated netlink message")
                payload = data[offset + _HDR.size : offset + size]
                offset += (size + 3) & ~3
                if mseq != seq:
                    continue  # an answer to an earlier request that gave up; never ours now
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code == 0:
                        return None
                    raise NetlinkError(-code, _ext_ack(payload, mflags) or os.strerror(-code))
                if mtype == NLMSG_DONE:
                    return None
                return payload

    # ---- links ---------------------------------------------------------------------------------

    def add_veth(
        self,
        name: str,
        peer: str,
        peer_netns_fd: int,
        up: bool = True,
        mtu: int | None = None,
        gso: tuple[int | None, int | None] = (None, None),
    ) -> None:
        """``ip link add NAME [up] [mtu M] type veth peer name PEER netns FD [mtu M]``, both ends
        with ``gso`` = (IPv6, IPv4) GSO/GRO sizes when given (BIG TCP). Only this end can be born
        up: the kernel configures the peer before the pair is joined (ENOTCONN)."""
        sized = (_u32(IFLA_MTU, mtu) if mtu else b"") + _size_attrs(*gso)
        peer_info = _ifinfo() + _str(IFLA_IFNAME, peer) + _u32(IFLA_NET_NS_FD, peer_netns_fd) + sized
        data = _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = (
            _ifinfo(up=up)
            + _str(IFLA_IFNAME, name)
            + sized
            + _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth") + data)
        )
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def _link_message(self, body: bytes) -> bytes | None:
        """One RTM_GETLINK answer's payload; None when there is no such link."""
        try:
            return self.request(RTM_GETLINK, 0, body)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    def get_link(self, name: str | None = None, index: int = 0) -> Link | None:
        """The link by name or index; None when there is none."""
        payload = self._link_message(_ifinfo(index) + (_str(IFLA_IFNAME, name) if name is not None else b""))
        if payload is None:
            return None
        _family, _type, found, _flags, _change = _IFINFO.unpack_from(payload)
        attrs = _attrs(payload, _IFINFO.size)
        info = _attrs(attrs.get(IFLA_LINKINFO, b""))
        kind = info.get(IFLA_INFO_KIND)
        peer = attrs.get(IFLA_LINK)
        return Link(
            index=found,
            name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
            mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
            kind=kind.rstrip(b"\0").decode() if kind else None,
            peer_index=struct.unpack("=i", peer)[0] if peer else None,
        )

    def get_sizes(self, index: int) -> LinkSizes | None:
        """The link's GSO/GRO/TSO sizes (``ip -d link show``); None when it is gone."""
        payload = self._link_message(_ifinfo(index))
        if payload is None:
            return None
        attrs = _attrs(payload, _IFINFO.size)

        def u32(kind: int) -> int | None:
            raw = attrs.get(kind)
            return struct.unpack("=I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None

        return LinkSizes(
            gso=u32(IFLA_GSO_MAX_SIZE) or 65536,
            gro=u32(IFLA_GRO_MAX_SIZE) or 65536,
            tso_max=u32(IFLA_TSO_MAX_SIZE) or 65536,
            gso_ipv4=u32(IFLA_GSO_IPV4_MAX_SIZE),
            gro_ipv4=u32(IFLA_GRO_IPV4_MAX_SIZE),
        )

    def set_sizes(self, index: int, ipv6: int | None = None, ipv4: int | None = None) -> None:
        """``ip link set dev INDEX gso_max_size N gro_max_size N`` (``ipv6``) and
        ``gso_ipv4_max_size M gro_ipv4_max_size M`` (``ipv4``); the kernel refuses a size above
        the link's TSO limit."""
        self.request(RTM_NEWLINK, NLM_F_ACK, _ifinfo(index) + _size_attrs(ipv6, ipv4))

    def set_link(
        self, index: int, up: bool | None = None, name: str | None = None, group: int | None = None
    ) -> None:
        """``ip link set dev INDEX [up|down] [name NAME] [group G]``."""
        body = _ifinfo(index, up)
        if name is not None:
            body += _str(IFLA_IFNAME, name)
        if group is not None:
            body += _u32(IFLA_GROUP, group)
        self.request(RTM_NEWLINK, NLM_F_ACK, body)

    def delete_link(self, index: int) -> bool:
        """``ip link del dev INDEX``; False when it was gone already."""
        try:
            self.request(RTM_DELLINK, NLM_F_ACK, _ifinfo(index))
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def delete_group(self, group: int) -> bool:
        """``ip link del group G``: every link of the group in one unregister batch (one RCU wait
        for all of them); False when the group had none."""
        try:
            self.request(RTM_DELLINK, NLM_F_ACK, _ifinfo(0) + _u32(IFLA_GROUP, group))
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # ---- addresses and routes ------------------------------------------------------------------

    def add_addr(self, index: int, address: Interface) -> bool:
        """``ip addr add ADDRESS dev INDEX`` (``nodad`` for IPv6); False when it is there."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        flags = IFA_F_NODAD if family == socket.AF_INET6 else 0
        packed = address.ip.packed
        body = _IFADDR.pack(family, address.network.prefixlen, flags, 0, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        try:
            self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
        return True

    def add_proxy_neigh(self, index: int, address: ipaddress.IPv6Address) -> None:
        """``ip -6 neigh replace proxy ADDRESS dev INDEX``: the node answers neighbour
        solicitations for ``address`` on that link (a pod's IPv6 gateway, local on podnet_host;
        IPv6 answers only for addresses on the receiving link, unlike IPv4's ARP)."""
        body = _NDMSG.pack(socket.AF_INET6, index, NUD_PERMANENT, NTF_PROXY, 0) + _attr(
            NDA_DST, address.packed
        )
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)

    def write_route(self, route: Route, index: int, replace: bool = True) -> None:
        """``ip route replace`` (or ``add``, which refuses an existing route with EEXIST) of
        ``route`` through link ``index``, with its protocol, scope, table and MTU."""
        family = socket.AF_INET if route.dst.version == 4 else socket.AF_INET6
        table = route.table
        header_table = table if table < 256 else 0
        flags = RTNH_F_ONLINK if route.onlink else 0
        body = _RTMSG.pack(
            family, route.dst.prefixlen, 0, 0, header_table, route.protocol, route.scope, RTN_UNICAST, flags
        )
        if route.dst.prefixlen:
            body += _attr(RTA_DST, route.dst.network_address.packed)
        body += _u32(RTA_OIF, index) + _u32(RTA_TABLE, table)
        if route.gateway is not None:
            body += _attr(RTA_GATEWAY, route.gateway.packed)
        if route.src is not None:
            body += _attr(RTA_PREFSRC, route.src.packed)
        if route.mtu:
            body += _attr(RTA_METRICS, _u32(RTAX_MTU, route.mtu))
        mode = NLM_F_REPLACE if replace else NLM_F_EXCL
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | mode, body)


def _ext_ack(payload: bytes, flags: int) -> str:
    """The kernel's extended-ACK message of an NLMSG_ERROR (NETLINK_CAP_ACK: no request echoed)."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    size = struct.unpack_from("=I", payload, 4)[0] if len(payload) >= 8 else 0
    echoed = _HDR.size if flags & 0x100 else max(size, _HDR.size)  # NLM_F_CAPPED: header only
    text = _attrs(payload, 4 + echoed).get(NLMSGERR_ATTR_MSG, b"")
    return text.rstrip(b"\0").decode(errors="replace")
