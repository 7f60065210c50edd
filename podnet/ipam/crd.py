"""IPAM mode ``crd`` (Cilium's CRD-backed IPAM): the node hands out only the addresses in its
PodnetNode's ``spec.ipam.pool`` (address -> owner), which someone else fills (a user, the lab,
another controller), and records what it uses in ``status.ipam.used`` (address -> namespace/pod).

Design fact: the node's router IP (the pods' gateway, the tunnel's next hop) is one of the pool's
addresses, kept as ``used`` by owner ``router`` and reused after a restart. Peers route every pool
address and every used one (``kube.convert.routed_cidrs``): an address in use that is removed from
the pool keeps working until its pod goes, and status says so. With ``datastore: kubernetes`` only.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping

from podnet.ipam.base import Allocation, IPAMContext, PodRef, PoolUsage, UnsupportedIPAMMode, register_mode
from podnet.ipam.host import IPAMError, IPAMExhausted
from podnet.model import IPAddress, IPNetwork
from podnet.util.debounce import Debounced

log = logging.getLogger(__name__)

MODE = "crd"
ROUTER_OWNER = "router"
WRITE_DELAY = 0.05  # seconds between an ADD and the status.ipam.used it changes


class CrdAllocator:
    """Addresses from the node's pool, lowest free first; one address per owner (IPv4 or IPv6,
    whichever the pool holds; a pool of both families gives one of each)."""

    def __init__(self, node: str, ctx: IPAMContext | None = None) -> None:
        self.node = node
        self._ctx = ctx
        self._lock = threading.Lock()
        self._pool: frozenset[IPAddress] = frozenset()
        self._owners: dict[str, tuple[IPAddress, ...]] = {}  # owner -> addresses
        self._pods: dict[str, str] = {}  # owner -> namespace/name, for status.ipam.used
        self._router: dict[int, IPAddress] = {}  # family -> router IP
        self._recorded_router: dict[int, IPAddress] = {}

    # ---- the pool, as the datastore says -------------------------------------------------------

    def set_pool(self, addresses: set[IPAddress], used: Mapping[str, str]) -> None:
        """The pool's current addresses, and ``status.ipam.used`` as last written (to find the
        router IP a previous run chose)."""
        with self._lock:
            grew = frozenset(addresses) != self._pool
            self._pool = frozenset(addresses)
            for ip, owner in used.items():
                if owner == ROUTER_OWNER:
                    address = ipaddress.ip_address(ip)
                    self._recorded_router.setdefault(address.version, address)
            new = self._router_candidates()
        if new and self._ctx is not None:
            self._ctx.prepare(tuple(new.values()))  # on the node before a pod routes through it
        with self._lock:
            for family, ip in new.items():
                self._router.setdefault(family, ip)
        if self._ctx is not None and (new or grew):
            self._ctx.changed()

    def _router_candidates(self) -> dict[int, IPAddress]:
        """A router IP for each family the pool holds and that has none yet: the one a previous
        run recorded (pods route through it), else the lowest free address."""
        found: dict[int, IPAddress] = {}
        taken = self._taken()
        for family in sorted({a.version for a in self._pool} - set(self._router)):
            recorded = self._recorded_router.get(family)
            if recorded is not None and recorded not in taken:
                found[family] = recorded
                continue
            free = next((a for a in sorted(self._pool) if a.version == family and a not in taken), None)
            if free is not None:
                found[family] = free
        return found

    def _taken(self) -> set[IPAddress]:
        return {ip for ips in self._owners.values() for ip in ips} | set(self._router.values())

    # ---- Allocator -----------------------------------------------------------------------------

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        with self._lock:
            hosts = [ipaddress.ip_network(a) for a in self._pool | self._taken()]
        found: list[IPNetwork] = []
        for family in (4, 6):
            found += ipaddress.collapse_addresses(h for h in hosts if h.version == family)  # type: ignore[arg-type]
        return tuple(found)

    def router_ips(self) -> tuple[IPAddress, ...]:
        with self._lock:
            return tuple(self._router[f] for f in sorted(self._router))

    def allocate(self, owner: str, pod: PodRef | None = None) -> tuple[Allocation, ...]:
        with self._lock:
            if owner in self._owners:
                return self._allocations(self._owners[owner])
            taken = self._taken()
            chosen = []
            for family in sorted(self._router):
                free = next((a for a in sorted(self._pool) if a.version == family and a not in taken), None)
                if free is None:
                    raise IPAMExhausted(self._empty(family))
                chosen.append(free)
            if not chosen:
                raise IPAMExhausted(self._empty(4))
            self._owners[owner] = tuple(chosen)
            self._pods[owner] = pod.key if pod is not None and pod.key else owner
        self._dirty()
        return self._allocations(tuple(chosen))

    def _empty(self, family: int) -> str:
        have = sum(1 for a in self._pool if a.version == family)
        in_use = sum(1 for ips in self._owners.values() for a in ips if a.version == family)
        return (
            f"node {self.node}: its CRD pool (podnetnode {self.node} spec.ipam.pool) has no free IPv{family} "
            f"address: {have} address(es), {in_use} in use by pods"
            + (", 1 kept as the node's router IP" if family in self._router else "")
            + f"; add addresses to podnetnode {self.node} spec.ipam.pool"
        )

    def _allocations(self, ips: tuple[IPAddress, ...]) -> tuple[Allocation, ...]:
        return tuple(
            Allocation(ip=ip, cidr=ipaddress.ip_network(ip), gateway=self._router[ip.version]) for ip in ips
        )

    def release(self, owner: str) -> bool:
        with self._lock:
            held = self._owners.pop(owner, None)
            self._pods.pop(owner, None)
        if held is not None:
            self._dirty()
        return held is not None

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None:
        """Addresses pods held before a restart stay theirs, in the pool or not (reported)."""
        with self._lock:
            for owner, ips in allocations.items():
                clash = [ip for ip in ips if ip in self._taken() and ip not in self._owners.get(owner, ())]
                if clash:
                    raise IPAMError(f"cannot restore {clash[0]} of {owner}: it is already in use")
                if any(ip.version not in self._router for ip in ips):
                    raise IPAMError(f"cannot restore {owner}: the pool has no router IP of its family yet")
                self._owners[owner] = tuple(ips)
                self._pods.setdefault(owner, owner)
        self._dirty()

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]:
        with self._lock:
            return dict(self._owners)

    def free(self, family: int) -> int:
        with self._lock:
            taken = self._taken()
            return sum(1 for a in self._pool if a.version == family and a not in taken)

    def usage(self) -> tuple[PoolUsage, ...]:
        with self._lock:
            families = sorted({a.version for a in self._pool} | set(self._router)) or [4]
            return tuple(self._family_usage(f) for f in families)

    def _family_usage(self, family: int) -> PoolUsage:
        """One family's use; with no free address left the pool is exhausted (nothing but its
        author adds addresses) and the error says how full it is and what to do. Under the lock."""
        mine = sorted(a for a in self._pool if a.version == family)
        taken = self._taken()
        used = sum(1 for ips in self._owners.values() for a in ips if a.version == family)
        error = ""
        if not mine:
            error = f"exhausted: podnetnode {self.node} spec.ipam.pool has no IPv{family} address; add some"
        elif all(a in taken for a in mine):
            ranges = [str(n) for n in ipaddress.collapse_addresses(ipaddress.ip_network(a) for a in mine)]
            where = ", ".join(ranges) if len(ranges) <= 3 else f"{ranges[0]}, ... ({len(ranges)} ranges)"
            router = ", 1 of them as the node's router IP" if self._router.get(family) in mine else ""
            error = (
                f"exhausted: all {len(mine)} addresses of podnetnode {self.node} spec.ipam.pool ({where}) "
                f"in use{router}; add addresses to the pool"
            )
        return PoolUsage(
            pool="crd",
            family=family,
            cidrs=(),
            used=used,
            capacity=max(0, len(mine) - (family in self._router)),
            error=error,
            exhausted=bool(error),
        )

    def problems(self) -> list[str]:
        with self._lock:
            outside = sorted(
                (ip, self._pods.get(owner, owner))
                for owner, ips in self._owners.items()
                for ip in ips
                if ip not in self._pool
            )
            router_gone = [ip for ip in self._router.values() if ip not in self._pool]
        found = [
            f"address {ip} of pod {pod} is no longer in podnetnode {self.node} spec.ipam.pool; it keeps "
            "working (peers still route it) until the pod is deleted; put it back, or delete the pod"
            for ip, pod in outside
        ]
        found += [
            f"the node's router IP {ip} is no longer in podnetnode {self.node} spec.ipam.pool; podnet keeps "
            "using it (pods route through it): put it back"
            for ip in router_gone
        ]
        return found

    def used(self) -> dict[str, str]:
        """``status.ipam.used``: address -> owner (namespace/pod, or ``router``)."""
        with self._lock:
            found = {str(ip): ROUTER_OWNER for ip in self._router.values()}
            for owner, ips in self._owners.items():
                found.update({str(ip): self._pods.get(owner, owner) for ip in ips})
            return found

    def close(self) -> None:
        pass

    def _dirty(self) -> None:
        """Hook: the Kubernetes-backed subclass writes ``status.ipam.used`` after changes."""


class KubeCrdAllocator(CrdAllocator):
    """``CrdAllocator`` fed by the node's PodnetNode; writes ``status.ipam.used`` in the background
    (an ADD never waits for the API server: the address is already routed as part of the pool)."""

    def __init__(self, ctx: IPAMContext) -> None:
        from podnet.kube.nodeipam import NodeIpamView

        super().__init__(ctx.node_name, ctx)
        make_client = getattr(ctx.datastore, "make_client", None)
        if ctx.datastore.kind != "kubernetes" or make_client is None:
            raise UnsupportedIPAMMode(
                "ipam.mode crd reads the node's address pool from its PodnetNode: it needs datastore: "
                "kubernetes"
            )
        self._view = NodeIpamView(make_client, ctx.node_name, self._on_change)
        self._writer = Debounced(self._write_used, "crd-used", delay=WRITE_DELAY)
        self._view.start()
        if not self._view.wait_synced(ctx.wait_timeout):
            self._view.stop()
            raise TimeoutError(f"node {ctx.node_name}: the watch of its podnetnode did not sync")
        self._on_change()

    def _on_change(self) -> None:
        spec, status = self._view.spec_ipam(), self._view.status_ipam()
        addresses = set()
        for text in spec.get("pool") or {}:
            try:
                addresses.add(ipaddress.ip_address(text))
            except ValueError:
                log.warning("podnetnode %s: ignoring %r in spec.ipam.pool: not an address", self.node, text)
        used = {str(k): str((v or {}).get("owner", "")) for k, v in (status.get("used") or {}).items()}
        self.set_pool(addresses, used)
        if self.used() != used:
            self._dirty()

    def _dirty(self) -> None:
        self._writer.kick()

    def _write_used(self) -> None:
        self._view.write_used(self.used(), self._view.status_ipam().get("used") or {})

    def close(self) -> None:
        self._writer.stop()
        self._view.stop()


register_mode(MODE, KubeCrdAllocator)
