"""What the verification commands need to know about a cluster, whoever built it: the cluster view.

Two narrow interfaces. ``ClusterView`` is what every node-facing command needs (status, bgp): the
nodes, how to reach a node's namespace and its agent socket, and the underlay routers with how to
ask them (``birdc``). ``PathView`` adds what a walk through several hosts needs (connectivity,
diagnose, capture, perf): every host's namespace and links, the pods, who owns an address, the
wiring of the underlay. A real host (``podnet.verify.hostview``) is a ``ClusterView`` only; a lab
(``podnet.lab.view``, the lab adapter) is both. The commands receive the lab adapter as a
``LabOpener`` from ``podnet.cli``, so nothing here imports the lab: ``--lab`` only picks the adapter.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pyroute2 import IPRoute

from podnet.model import IPAddress
from podnet.statusdoc.document import StatusDocument
from podnet.store.client import Store


class ViewError(RuntimeError):
    """The cluster cannot be read as asked; the message says which cluster and what to do."""


class NoAgentError(ViewError):
    """No agent answers where the command needs one (the message says what to start or pass)."""


class NoLabUpError(ViewError):
    """Asked for "the only lab that is up" when none is (the message says how to start one)."""


@dataclass(frozen=True)
class Link:
    """One network device as the kernel has it."""

    name: str
    index: int
    mtu: int
    kind: str  # the link kind "ip -d link" shows: "veth", "bridge", "" ...
    up: bool
    mac: str = ""  # lower case; "" for devices without one
    peer_index: int | None = None  # a veth's peer's ifindex (in the peer's namespace)


@dataclass(frozen=True)
class Place:
    """A place a packet starts from or goes to: a host and one of its addresses."""

    host: str
    ip: IPAddress
    kind: str  # "pod" | "node" | "router" | "external" | "controlplane" | "address"

    def describe(self) -> str:
        return f"{self.host} ({self.ip})" if self.host != str(self.ip) else str(self.ip)


@dataclass(frozen=True)
class UnderlayPort:
    """A device the underlay was wired with: a port on a segment, or a point-to-point link."""

    name: str
    segment: str | None  # the segment's name; None for a point-to-point link


class BgpRouter(Protocol):
    """An underlay router that runs BGP, asked through its control socket."""

    @property
    def name(self) -> str: ...

    def birdc(self, *command: str) -> str:
        """The output of one ``birdc`` command (ViewError when the router does not answer)."""
        ...


class ClusterView(Protocol):
    """Nodes, their namespaces and agents, and the underlay routers; a context manager."""

    @property
    def lab(self) -> str | None:
        """The lab's name; None on a real host."""
        ...

    @property
    def nodes(self) -> list[str]: ...

    def ns(self, host: str) -> str | None:
        """The namespace of ``host`` by name; None: this process's own (a real host)."""
        ...

    def ipr(self, host: str) -> IPRoute:
        """A netlink socket in ``host``'s namespace (kept open until ``close``)."""
        ...

    def agent_socket(self, node: str) -> Path: ...

    def agent_status(self, node: str) -> dict[str, Any]:
        """The node agent's status document. With several nodes, an agent that does not answer
        is ``{"error": ...}`` so the others still show; the host's one agent raises NoAgentError."""
        ...

    def routers_by_address(self) -> dict[str, str]:
        """``{address: router}`` of the underlay routers, to name the hop a peer is routed through."""
        ...

    def bgp_routers(self) -> Sequence[BgpRouter]: ...

    def supervised(self) -> list[dict[str, Any]]:
        """The processes the lab runs beside the agents (etcd, kube-apiserver, operator, BIRD...):
        ``{"name", "pid", "running", "restart"}`` each; none on a real host."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> ClusterView: ...

    def __exit__(self, *exc: object) -> None: ...


class PathView(ClusterView, Protocol):
    """A cluster whose every host can be entered: pods, links, addresses and the underlay wiring."""

    @property
    def name(self) -> str: ...

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        """``{pod: {"node": ..., "ips": [...]}}``."""
        ...

    def ns(self, host: str) -> str: ...

    def hosts(self) -> list[str]:
        """Every host with a namespace: underlay hosts, segments and pods."""
        ...

    def role(self, host: str) -> str: ...

    def pods_on(self, node: str) -> list[str]: ...

    def pod_ip(self, pod: str, family: int | None = None) -> IPAddress: ...

    def node_ip(self, host: str, family: int = 4) -> IPAddress: ...

    def external_hosts(self) -> list[str]: ...

    def cluster_setting(self, key: str, default: Any = None) -> Any:
        """A cluster setting the nodes were given (``routingMode``, ...)."""
        ...

    def links(self, host: str) -> dict[str, Link]: ...

    def owner(self, ip: IPAddress) -> tuple[str, str] | None:
        """``(host, device)`` holding ``ip``, None when no host has it."""
        ...

    def underlay_port(self, host: str, dev: str) -> UnderlayPort | None: ...

    def segment_host(self, segment: str) -> str:
        """The host whose ports are the segment's bridge ports."""
        ...

    def resolve(self, target: str, family: int | None = None) -> Place:
        """A pod, host or address as a place: ``pod1``, ``node2``, ``world``, ``10.244.2.2``."""
        ...

    def cluster_store(self) -> contextlib.AbstractContextManager[Store]:
        """A client of the cluster's etcd (datastore etcd), usable inside the block."""
        ...

    def __enter__(self) -> PathView: ...


LabOpener = Callable[[str | None], PathView]
"""The lab adapter: opens the lab named, or with None the only lab that is up (ViewError otherwise)."""


def agent_document(view: ClusterView, node: str) -> StatusDocument:
    """The node agent's typed status document (``unanswered`` says why when it does not answer
    in a lab; a real host's one agent raises NoAgentError)."""
    return StatusDocument.from_json(view.agent_status(node))


def resolve_pair(view: PathView, src: str, dst: str, family: int | None = None) -> tuple[Place, Place]:
    """Two places of one family: ``family`` when given, else an address given on either side
    picks the family of the other side's pod or host (``node1-p1 fd00:10:244:1::2`` is an IPv6
    question), else IPv4."""
    for text in (dst, src) if family is None else ():
        try:
            family = ipaddress.ip_address(text).version
            break
        except ValueError:
            continue
    return view.resolve(src, family), view.resolve(dst, family)


def pair_families(view: PathView, src: str, dst: str, family: int | None = None) -> list[int]:
    """The families to ask about ``src -> dst``: the one given or named by an address, else every
    family both ends have (a dual-stack pair is two questions), IPv4 first."""
    if family is not None:
        return [family]
    for text in (dst, src):
        try:
            return [ipaddress.ip_address(text).version]
        except ValueError:
            continue
    found = []
    for fam in (4, 6):
        try:
            view.resolve(src, fam), view.resolve(dst, fam)
        except (ViewError, KeyError):
            continue
        found.append(fam)
    return found or [4]
