"""IPAM mode ``multi-pool`` (Cilium's Multi-Pool): pod CIDRs per named pool (PodnetIPPool), asked
for as pods come and given by ``podnet operator --ipam multi-pool``.

The agent owns ``spec.ipam.pools.requested`` of its PodnetNode: per pool the addresses it needs
(``pools.needed_addresses``: in use + waiting ADDs + pre-allocation, rounded up) and the CIDRs
it gives back (no pod, not needed); the operator owns ``spec.ipam.pools.allocated`` and writes a
pool's trouble to ``status.ipam.pools.<pool>.error``. An ADD whose pool has no free address waits
(``ALLOCATE_WAIT``) while the operator carves a new CIDR; with the pool exhausted it fails with
CNI code 100 naming the pool. A new CIDR's router IP is on the node before any pod gets an address
in it. On either datastore: the same fields live in the PodnetNode on Kubernetes and under
``/podnet/v1/ipam/multi-pool/`` in etcd (``store.multipool``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from podnet.ipam.base import Allocation, IPAMContext, PodRef, PoolUsage, register_mode
from podnet.ipam.cluster_pool import host_usage
from podnet.ipam.host import HostAllocator, IPAMError, IPAMExhausted, router_ip
from podnet.ipam.multi_pool_model import (
    CidrUse,
    PoolDef,
    needed_addresses,
    parse_pool,
    pool_of,
    pre_allocation,
    releasable,
)
from podnet.model import IPAddress, IPNetwork
from podnet.util.debounce import Debounced

log = logging.getLogger(__name__)

MODE = "multi-pool"
ALLOCATE_WAIT = 10.0  # seconds an ADD waits for the operator to give its pool a new CIDR
ERROR_WAIT = 2.0  # ... when the operator already reports trouble with that pool
ADDRS_KEY = {4: "ipv4-addrs", 6: "ipv6-addrs"}
WRITE_DELAY = 0.05  # seconds between an ADD and the request it changes (at once when an ADD waits)


@dataclass
class _Pool:
    hosts: dict[IPNetwork, HostAllocator] = field(default_factory=dict)
    releasing: set[IPNetwork] = field(default_factory=set)
    pending: dict[int, int] = field(default_factory=dict)  # family -> ADDs waiting


class MultiPoolAllocator:
    """The node's CIDRs of every pool, fed by ``set_state``; pure apart from the two context hooks."""

    def __init__(
        self,
        node: str,
        pre_allocate: Sequence[tuple[str, int]],
        ctx: IPAMContext | None = None,
        wait: float = ALLOCATE_WAIT,
    ) -> None:
        self.node = node
        self._pre_allocate = tuple(pre_allocate)
        self._ctx = ctx
        self._wait = wait
        self._cond = threading.Condition()
        self._pools: dict[str, _Pool] = {}
        self._defs: dict[str, PoolDef] = {}
        self._def_errors: dict[str, str] = {}
        self._errors: dict[str, str] = {}  # pool -> the operator's error for this node
        self._owner_pool: dict[str, str] = {}

    # ---- what the datastore says ---------------------------------------------------------------

    def set_state(
        self,
        allocated: Mapping[str, Sequence[IPNetwork]],
        errors: Mapping[str, str],
        pools: Mapping[str, PoolDef],
        def_errors: Mapping[str, str] | None = None,
        releasing: Mapping[str, Sequence[IPNetwork]] | None = None,
    ) -> None:
        """The operator's allocation for this node, its errors, and the pool resources."""
        with self._cond:
            known = {c for p in self._pools.values() for c in p.hosts}
        new = [c for cidrs in allocated.values() for c in cidrs if c not in known]
        if new and self._ctx is not None:
            self._ctx.prepare(tuple(router_ip(c) for c in new))  # before any pod uses them
        with self._cond:
            for name, cidrs in allocated.items():
                pool = self._pools.setdefault(name, _Pool())
                for cidr in cidrs:
                    pool.hosts.setdefault(cidr, HostAllocator(cidr))
                pool.releasing |= set((releasing or {}).get(name, ())) & set(cidrs)
            for name, pool in self._pools.items():
                wanted = set(allocated.get(name, ()))
                for cidr in [c for c in pool.hosts if c not in wanted and not pool.hosts[c].allocated()]:
                    del pool.hosts[cidr]
                    pool.releasing.discard(cidr)
            self._errors = dict(errors)
            self._defs = dict(pools)
            self._def_errors = dict(def_errors or {})
            self._cond.notify_all()
        if new and self._ctx is not None:
            self._ctx.changed()

    def requested(self) -> list[dict[str, Any]]:
        """``spec.ipam.pools.requested``; marks CIDRs to give back as it goes."""
        with self._cond:
            names = sorted({n for n, _ in self._pre_allocate} | set(self._pools))
            entries = []
            for name in names:
                pool = self._pools.setdefault(name, _Pool())
                needed: dict[str, int] = {}
                for family in self._families(name):
                    count = self._needed(name, family)
                    needed[ADDRS_KEY[family]] = count
                    uses = [
                        CidrUse(c, len(h.allocated()), h.capacity())
                        for c, h in pool.hosts.items()
                        if c.version == family and c not in pool.releasing
                    ]
                    pool.releasing |= set(releasable(uses, count))
                entry: dict[str, Any] = {"pool": name, "needed": needed}
                if pool.releasing:
                    entry["release"] = [str(c) for c in sorted(pool.releasing, key=_net_key)]
                entries.append(entry)
            return entries

    def _families(self, name: str) -> tuple[int, ...]:
        if name in self._defs:
            return self._defs[name].families
        held = {c.version for c in self._pools.get(name, _Pool()).hosts}
        return tuple(sorted(held)) or (4,)

    def _needed(self, name: str, family: int) -> int:
        pool = self._pools.get(name, _Pool())
        in_use = sum(len(h.allocated()) for c, h in pool.hosts.items() if c.version == family)
        return needed_addresses(in_use, pool.pending.get(family, 0), pre_allocation(self._pre_allocate, name))

    # ---- Allocator -----------------------------------------------------------------------------

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        with self._cond:
            held = [c for p in self._pools.values() for c in p.hosts]
        return tuple(sorted(held, key=lambda c: (c.version, c)))

    def router_ips(self) -> tuple[IPAddress, ...]:
        return tuple(router_ip(c) for c in self.cidrs)

    def allocate(self, owner: str, pod: PodRef | None = None) -> tuple[Allocation, ...]:
        name = pool_of(pod)
        with self._cond:
            if owner in self._owner_pool:
                return self._held(owner)
            if name not in self._defs and name not in self._pools:
                raise IPAMExhausted(self._unknown(name, pod))
            result: list[Allocation] = []
            self._owner_pool[owner] = name
            try:
                for family in self._families(name):
                    host = self._room(name, family) or self._wait_for_room(name, family)
                    ip = host.allocate(owner)
                    result.append(Allocation(ip=ip, cidr=host.cidr, gateway=host.router_ip))
            except Exception:
                self._release_locked(owner)
                raise
        self._kick()
        return tuple(result)

    def _unknown(self, name: str, pod: PodRef | None) -> str:
        who = f"pod {pod.key}" if pod is not None and pod.key else "the pod"
        known = ", ".join(sorted(self._defs)) or "none"
        return (
            f"{who} asks for IP pool {name!r} (ipam.podnet.io/ip-pool of the pod or its namespace), "
            f"but there is no PodnetIPPool {name!r} (pools: {known}); create it or fix the annotation"
        )

    def _room(self, name: str, family: int) -> HostAllocator | None:
        pool = self._pools.get(name)
        if pool is None:
            return None
        ordered = sorted(pool.hosts.items(), key=lambda i: _net_key(i[0]))
        return next(
            (h for c, h in ordered if c.version == family and c not in pool.releasing and h.free_count() > 0),
            None,
        )

    def _wait_for_room(self, name: str, family: int) -> HostAllocator:
        """Ask the operator for more (the pending count goes into ``needed``) and wait."""
        pool = self._pools.setdefault(name, _Pool())
        pool.pending[family] = pool.pending.get(family, 0) + 1
        self._kick(urgent=True)
        started = time.monotonic()
        try:
            while True:
                host = self._room(name, family)
                if host is not None:
                    return host
                waited = time.monotonic() - started
                limit = ERROR_WAIT if self._errors.get(name) or name in self._def_errors else self._wait
                if waited >= limit:
                    raise IPAMExhausted(self._exhausted(name, family))
                self._cond.wait(min(0.5, limit - waited))
        finally:
            pool.pending[family] -= 1

    def _exhausted(self, name: str, family: int) -> str:
        pool = self._pools.get(name, _Pool())
        held = ", ".join(str(c) for c in sorted(pool.hosts, key=_net_key) if c.version == family) or "none"
        why = (
            self._errors.get(name)
            or self._def_errors.get(name)
            or (
                f"the operator gave no new CIDR within {self._wait:g}s: "
                "is `podnet operator --ipam multi-pool` running?"
            )
        )
        return (
            f"IP pool {name!r} has no free IPv{family} address on node {self.node} (its CIDRs: {held}): {why}"
        )

    def _held(self, owner: str) -> tuple[Allocation, ...]:
        pool = self._pools[self._owner_pool[owner]]
        found = []
        for host in sorted(pool.hosts.values(), key=lambda h: h.cidr.version):
            ip = host.allocated().get(owner)
            if ip is not None:
                found.append(Allocation(ip=ip, cidr=host.cidr, gateway=host.router_ip))
        return tuple(found)

    def release(self, owner: str) -> bool:
        with self._cond:
            held = self._release_locked(owner)
        if held:
            self._kick()
        return held

    def _release_locked(self, owner: str) -> bool:
        name = self._owner_pool.pop(owner, None)
        if name is None:
            return False
        for host in self._pools[name].hosts.values():
            host.release(owner)
        return True

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None:
        with self._cond:
            for owner, ips in allocations.items():
                for ip in ips:
                    found = next(
                        ((n, p.hosts[c]) for n, p in self._pools.items() for c in p.hosts if ip in c), None
                    )
                    if found is None:
                        raise IPAMError(
                            f"cannot restore {ip} of {owner}: it is in none of the node's pool CIDRs "
                            f"({', '.join(str(c) for p in self._pools.values() for c in p.hosts) or 'none'})"
                        )
                    found[1].allocate(owner, ip)
                    self._owner_pool[owner] = found[0]
        self._kick()

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]:
        with self._cond:
            merged: dict[str, tuple[IPAddress, ...]] = {}
            for pool in self._pools.values():
                for host in pool.hosts.values():
                    for owner, ip in host.allocated().items():
                        merged[owner] = (*merged.get(owner, ()), ip)
            return merged

    def free(self, family: int) -> int:
        with self._cond:
            return sum(
                h.free_count()
                for p in self._pools.values()
                for c, h in p.hosts.items()
                if c.version == family and c not in p.releasing
            )

    def usage(self) -> tuple[PoolUsage, ...]:
        with self._cond:
            found: list[PoolUsage] = []
            for name in sorted(set(self._pools) | {n for n, _ in self._pre_allocate}):
                pool = self._pools.get(name, _Pool())
                hosts = [
                    h
                    for c, h in sorted(pool.hosts.items(), key=lambda i: _net_key(i[0]))
                    if c not in pool.releasing
                ]
                pool_def = self._defs.get(name)
                error = self._errors.get(name) or self._def_errors.get(name, "")
                if pool_def is None and not error:
                    error = f"there is no PodnetIPPool {name!r}"
                for family in self._families(name):
                    mine = [h for h in hosts if h.cidr.version == family]
                    (use,) = host_usage(name, mine) or (PoolUsage(name, family, (), 0, 0),)
                    found.append(
                        PoolUsage(
                            pool=name,
                            family=family,
                            cidrs=use.cidrs,
                            used=use.used,
                            capacity=use.capacity,
                            needed=self._needed(name, family),
                            error=error,
                            pool_cidrs=pool_def.family_cidrs(family) if pool_def else (),
                            exhausted=pool_def is not None and bool(error) and use.used >= use.capacity,
                        )
                    )
            return tuple(found)

    def problems(self) -> list[str]:
        with self._cond:
            used = {n for n, p in self._pools.items() if any(h.allocated() for h in p.hosts.values())}
            wanted = used | {n for n, _ in self._pre_allocate}
            return [f"IP pool {n!r}: {e}" for n, e in sorted(self._errors.items()) if e and n in wanted]

    def close(self) -> None:
        pass

    def _kick(self, urgent: bool = False) -> None:
        """Hook: the datastore-backed subclass writes ``requested`` after changes."""


class PoolView(Protocol):
    """Where a node reads its pools and writes its request: ``kube.nodeipam.NodeIpamView`` or
    ``store.multipool.EtcdPoolView`` (the same fields on either datastore)."""

    def wait_synced(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...

    def spec_ipam(self) -> dict[str, Any]: ...

    def status_ipam(self) -> dict[str, Any]: ...

    def pools(self) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]: ...

    def write_requested(self, requested: Sequence[Mapping[str, Any]]) -> None: ...


def _view(ctx: IPAMContext, on_change: Callable[[], None]) -> PoolView:
    if ctx.datastore.kind == "kubernetes":
        from podnet.kube.nodeipam import NodeIpamView

        return NodeIpamView(ctx.datastore.make_client, ctx.node_name, on_change, pools=True).start()  # type: ignore[attr-defined]
    from podnet.store.multipool import EtcdPoolView

    return EtcdPoolView(ctx.datastore.store, ctx.node_name, on_change).start()  # type: ignore[attr-defined]


class WatchedMultiPoolAllocator(MultiPoolAllocator):
    """``MultiPoolAllocator`` fed by the datastore: the node's allocation and the pools."""

    def __init__(self, ctx: IPAMContext) -> None:
        super().__init__(ctx.node_name, ctx.settings.get("multi_pool_pre_allocation", ()), ctx)
        self._writer = Debounced(self._write_requested, "multi-pool-requested", delay=WRITE_DELAY)
        self._view = _view(ctx, self._on_change)
        if not self._view.wait_synced(ctx.wait_timeout):
            self._view.stop()
            raise TimeoutError(f"node {ctx.node_name}: the watch of its IP pools did not sync")
        self._on_change()
        self._kick()

    def _on_change(self) -> None:
        spec, status = self._view.spec_ipam(), self._view.status_ipam()
        pools_spec = spec.get("pools") or {}
        allocated = {
            str(e.get("pool")): [ipaddress.ip_network(c) for c in e.get("cidrs") or []]
            for e in pools_spec.get("allocated") or []
        }
        releasing = {
            str(e.get("pool")): [ipaddress.ip_network(c) for c in e.get("release") or []]
            for e in pools_spec.get("requested") or []
        }
        errors = {str(k): str((v or {}).get("error") or "") for k, v in (status.get("pools") or {}).items()}
        defs: dict[str, PoolDef] = {}
        def_errors: dict[str, str] = {}
        for name, pool_spec, pool_status in self._view.pools():
            if pool_status.get("error"):
                def_errors[name] = str(pool_status["error"])
            try:
                defs[name] = parse_pool(name, pool_spec)
            except ValueError as exc:
                def_errors[name] = str(exc)
        self.set_state(allocated, errors, defs, def_errors, releasing)
        self._kick()  # a CIDR the operator took back leaves the release list

    def _kick(self, urgent: bool = False) -> None:
        self._writer.kick(urgent)

    def _write_requested(self) -> None:
        requested = self.requested()
        current = ((self._view.spec_ipam().get("pools") or {}).get("requested")) or []
        if _normal(current) != _normal(requested):
            self._view.write_requested(requested)

    def close(self) -> None:
        self._writer.stop()
        self._view.stop()


def _normal(entries: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            str(e.get("pool")),
            tuple(sorted((str(k), int(v)) for k, v in (e.get("needed") or {}).items())),
            tuple(sorted(e.get("release") or [])),
        )
        for e in entries
    )


def _net_key(cidr: IPNetwork) -> tuple[int, IPNetwork]:
    """Sort key for CIDRs of both families (IPv4 and IPv6 networks do not compare)."""
    return (cidr.version, cidr)


register_mode(MODE, WatchedMultiPoolAllocator)
