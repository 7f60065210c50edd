"""The kernel objects podnet plans and applies, as frozen values compared by value.

Both the pure planners (``podnet.datapath.modes``) and the netlink helpers
(``podnet.datapath.kernel``) speak in these objects; neither imports the other's package. Each
object prints the ``ip`` command line it stands for. IPv4 and IPv6 go through the same classes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from podnet import owned
from podnet.model import IPAddress, IPNetwork

SCOPE_UNIVERSE = 0
SCOPE_LINK = 253


def family_of(value: IPAddress | IPNetwork) -> int:
    """4 or 6."""
    return value.version


def default_route(family: int) -> IPNetwork:
    """``0.0.0.0/0`` or ``::/0``."""
    return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")


def host_prefix(address: IPAddress) -> IPNetwork:
    """``a.b.c.d/32`` or ``x::y/128``."""
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")


@dataclass(frozen=True, order=True)
class Route:
    """One route, e.g. ``10.244.2.0/24 via 10.244.2.1 dev podnet_vxlan onlink src 10.244.1.1
    mtu 1450 proto 201``. A route is identified by ``(table, dst)``."""

    dst: IPNetwork
    dev: str
    gateway: IPAddress | None = None
    onlink: bool = False
    src: IPAddress | None = None
    mtu: int | None = None
    protocol: int = owned.ROUTE_PROTOCOL
    table: int = owned.MAIN_TABLE
    scope: int = SCOPE_UNIVERSE

    @property
    def family(self) -> int:
        return self.dst.version

    @property
    def key(self) -> tuple[int, IPNetwork]:
        return (self.table, self.dst)

    def describe(self) -> str:
        """The ``ip route`` line this route stands for."""
        parts = ["default" if self.dst.prefixlen == 0 else str(self.dst)]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        parts.append(f"dev {self.dev}")
        if self.table != owned.MAIN_TABLE:
            parts.append(f"table {self.table}")
        if self.scope == SCOPE_LINK:
            parts.append("scope link")
        if self.onlink:
            parts.append("onlink")
        if self.src is not None:
            parts.append(f"src {self.src}")
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        parts.append(f"proto {self.protocol}")
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class Neighbour:
    """A permanent neighbour entry: ``ip neigh replace <dst> lladdr <lladdr> dev <dev> nud permanent``."""

    dst: IPAddress
    lladdr: str
    dev: str

    def describe(self) -> str:
        return f"{self.dst} lladdr {self.lladdr} dev {self.dev} permanent"


@dataclass(frozen=True, order=True)
class FdbEntry:
    """A tunnel forwarding entry: ``bridge fdb replace <lladdr> dst <dst> dev <dev> self permanent``."""

    lladdr: str
    dst: IPAddress
    dev: str

    def describe(self) -> str:
        return f"{self.lladdr} dst {self.dst} dev {self.dev} self permanent"


@dataclass(frozen=True)
class Rule:
    """A policy routing rule: ``ip rule add pref <priority> [from <src>] [to <dst>] lookup <table>
    proto 201``. Identified by all of its fields (the kernel allows equal priorities)."""

    priority: int
    table: int
    family: int
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    protocol: int = owned.ROUTE_PROTOCOL

    def __post_init__(self) -> None:
        for net in (self.src, self.dst):
            if net is not None and net.version != self.family:
                raise ValueError(f"rule {self.describe()}: {net} is not IPv{self.family}")

    @property
    def sort_key(self) -> tuple[int, int, str, str, int]:
        return (self.family, self.priority, str(self.src or ""), str(self.dst or ""), self.table)

    def describe(self) -> str:
        parts = [f"pref {self.priority}"]
        if self.src is not None:
            parts.append(f"from {self.src}")
        if self.dst is not None:
            parts.append(f"to {self.dst}")
        if self.src is None and self.dst is None:
            parts.append("from all")
        parts.append(f"lookup {'main' if self.table == owned.MAIN_TABLE else self.table}")
        parts.append(f"proto {self.protocol}")
        prefix = "ip -6 rule" if self.family == 6 else "ip rule"
        return f"{prefix} {' '.join(parts)}"


@dataclass(frozen=True)
class PeerPath:
    """What ``ip route get <peer node ip>`` said: the device and, if not on-link, the gateway."""

    dst: IPAddress
    dev: str | None
    gateway: IPAddress | None = None
    src: IPAddress | None = None

    @property
    def direct(self) -> bool:
        return self.gateway is None
