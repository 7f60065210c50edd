"""IPAM mode ``eni`` (Cilium's AWS ENI IPAM): pods get secondary addresses of the node's ENIs,
which the VPC routes to the ENI; ``podnet operator --ipam eni`` is the only EC2 caller.

The agent publishes its ENI spec (preAllocate, subnets, security groups: ``config.eni``), reads
the operator's status (the ENIs and their addresses, ``store.eni``), hands out the lowest free
secondary address of an ENI at or above ``firstInterfaceIndex`` and records what it uses. One
address is the node's router IP (the pods' gateway), kept as owner ``router`` across restarts.
An ADD with no free address waits (``ALLOCATE_WAIT``) for the operator to assign more; when the
instance type's limits are reached it fails at once with CNI code 100 saying so.

Design fact: an address the operator marked for release is never handed out; the agent lists it
as ready for release only while no pod holds it (the handshake in ``store.eni``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from podnet.config.eni import EniSettings
from podnet.ipam.base import Allocation, IPAMContext, PodRef, PoolUsage, UnsupportedIPAMMode, register_mode
from podnet.ipam.enimodel import ROUTER_OWNER, Eni, enis_from_status
from podnet.ipam.host import IPAMError, IPAMExhausted
from podnet.model import IPAddress, IPNetwork
from podnet.util.debounce import Debounced

if TYPE_CHECKING:
    from podnet.store.eni import EniState

log = logging.getLogger(__name__)

MODE = "eni"
ALLOCATE_WAIT = 10.0  # seconds an ADD waits for the operator to assign more ENI addresses
WRITE_DELAY = 0.05  # seconds between an ADD and the "used" document it changes


class EniAllocator:
    """The node's ENI addresses, fed by ``set_status``; pure apart from the context hooks."""

    def __init__(
        self, node: str, settings: EniSettings, ctx: IPAMContext | None = None, wait: float = ALLOCATE_WAIT
    ) -> None:
        self.node = node
        self.settings = settings
        self._ctx = ctx
        self._wait = wait
        self._cond = threading.Condition()
        self._enis: tuple[Eni, ...] = ()
        self._owner_of_eni: dict[IPAddress, Eni] = {}  # every usable secondary address -> its ENI
        self._marked: frozenset[IPAddress] = frozenset()
        self._owners: dict[str, tuple[IPAddress, ...]] = {}
        self._pods: dict[str, str] = {}
        self._router: IPAddress | None = None
        self._recorded_router: IPAddress | None = None
        self._status: dict[str, Any] = {}
        self._epochs: dict[IPAddress, int] = {}  # marked address -> the operator's mark epoch
        self._wired: frozenset[str] | None = None  # MACs of ENIs whose link is set up (None: all)
        self._restored = False  # pods from before a restart are back: "used" may be reported
        self._waiting = 0

    # ---- what the operator says ----------------------------------------------------------------

    def set_status(self, status: Mapping[str, Any], recorded_used: Mapping[str, str] | None = None) -> None:
        """The operator's status for this node, and our own last ``used`` (the router IP a previous
        run chose)."""
        enis = enis_from_status(status)
        first = self.settings.first_interface_index
        usable = {a: e for e in enis if e.index >= first for a in e.addresses}
        release = status.get("release") or {}
        marked = frozenset(ipaddress.IPv4Address(a) for a in release)
        epochs = {ipaddress.IPv4Address(a): _epoch(v) for a, v in release.items()}
        for ip, owner in (recorded_used or {}).items():
            if owner == ROUTER_OWNER:
                self._recorded_router = ipaddress.ip_address(ip)
        with self._cond:
            shape = (enis, marked, str(status.get("limitReached") or ""))
            reshaped = shape != (self._enis, self._marked, str(self._status.get("limitReached") or ""))
            self._enis, self._owner_of_eni, self._marked, self._epochs = enis, usable, marked, epochs
            self._status = dict(status)
            router = self._router_candidate()
        if router is not None and self._ctx is not None:
            self._ctx.prepare((router,))  # on the node before a pod routes through it
        with self._cond:
            if router is not None and self._router is None:
                self._router = router
            self._cond.notify_all()
        if self._ctx is not None and (reshaped or router is not None):  # not for the operator's counters
            self._ctx.changed()

    def _router_candidate(self) -> IPAddress | None:
        if self._router is not None:
            return None
        taken = self._taken()
        recorded = self._recorded_router
        if recorded is not None and recorded in self._owner_of_eni and recorded not in taken:
            return recorded
        return next((a for a in sorted(self._owner_of_eni) if a not in taken and a not in self._marked), None)

    def _taken(self) -> set[IPAddress]:
        taken = {ip for ips in self._owners.values() for ip in ips}
        return taken | ({self._router} if self._router is not None else set())

    def _free(self) -> list[IPAddress]:
        """Free addresses of ENIs whose link is set up (an address of an ENI the node has not
        wired yet would route through an empty table), not marked for release."""
        taken = self._taken()
        wired = self._wired
        return [
            a
            for a, eni in sorted(self._owner_of_eni.items())
            if a not in taken and a not in self._marked and (wired is None or eni.mac in wired)
        ]

    # ---- Allocator -----------------------------------------------------------------------------

    @property
    def cidrs(self) -> tuple[IPNetwork, ...]:
        """The node's ENI addresses, collapsed (peers need no route: the VPC delivers them)."""
        with self._cond:
            hosts = [ipaddress.IPv4Network(a) for a in set(self._owner_of_eni) | self._taken()]
        return tuple(ipaddress.collapse_addresses(sorted(hosts)))

    def router_ips(self) -> tuple[IPAddress, ...]:
        with self._cond:
            return (self._router,) if self._router is not None else ()

    def allocate(self, owner: str, pod: PodRef | None = None) -> tuple[Allocation, ...]:
        deadline = time.monotonic() + self._wait
        with self._cond:
            if owner in self._owners:
                return self._allocations(self._owners[owner])
            while True:
                free = self._free() if self._router is not None else []
                if free:
                    self._owners[owner] = (free[0],)
                    self._pods[owner] = pod.key if pod is not None and pod.key else owner
                    break
                left = deadline - time.monotonic()
                limit = self._limit_reached()
                if left <= 0 or limit:
                    raise IPAMExhausted(limit or self._empty())
                self._waiting += 1
                self._kick(urgent=True)  # the operator sees the shortfall now
                self._cond.wait(min(left, 0.5))
                self._waiting -= 1
            chosen = self._owners[owner]
        self._kick()
        return self._allocations(chosen)

    def _limit_reached(self) -> str:
        text = str(self._status.get("limitReached") or "")
        return f"node {self.node}: no free ENI address and none can be added: {text}" if text else ""

    def _empty(self) -> str:
        errors = self._status.get("errors") or []
        last = f"; the operator's last EC2 error: {errors[-1].get('message')}" if errors else ""
        if self._status.get("problem"):
            last += f"; the operator says: {self._status['problem']}"
        return (
            f"node {self.node}: no free ENI address after {self._wait:g}s: {len(self._owner_of_eni)} "
            f"address(es) on its ENIs, {len(self._taken())} in use{last}; is 'podnet operator --ipam eni' "
            "running? (podnet status shows the node's ENIs)"
        )

    def _allocations(self, ips: tuple[IPAddress, ...]) -> tuple[Allocation, ...]:
        assert self._router is not None or not ips
        return tuple(Allocation(ip=ip, cidr=ipaddress.ip_network(ip), gateway=self._router) for ip in ips)  # type: ignore[arg-type]

    def release(self, owner: str) -> bool:
        with self._cond:
            held = self._owners.pop(owner, None)
            self._pods.pop(owner, None)
        if held is not None:
            self._kick()
        return held is not None

    def restore(self, allocations: Mapping[str, tuple[IPAddress, ...]]) -> None:
        """Addresses pods held before a restart stay theirs (on an ENI or not: reported)."""
        with self._cond:
            if self._router is None:
                raise IPAMError("cannot restore pods: the node has no ENI address for its router IP yet")
            for owner, ips in allocations.items():
                clash = [ip for ip in ips if ip in self._taken() and ip not in self._owners.get(owner, ())]
                if clash:
                    raise IPAMError(f"cannot restore {clash[0]} of {owner}: it is already in use")
                self._owners[owner] = tuple(ips)
                self._pods.setdefault(owner, owner)
        self._kick()

    def allocated(self) -> dict[str, tuple[IPAddress, ...]]:
        with self._cond:
            return dict(self._owners)

    def free(self, family: int) -> int:
        with self._cond:
            return len(self._free()) if family == 4 and self._router is not None else 0

    def usage(self) -> tuple[PoolUsage, ...]:
        first = self.settings.first_interface_index
        with self._cond:
            used = sum(len(ips) for ips in self._owners.values())
            errors = self._status.get("errors") or []
            return (
                PoolUsage(
                    pool="eni",
                    family=4,
                    cidrs=tuple(dict.fromkeys(e.subnet_cidr for e in self._enis if e.index >= first)),
                    used=used,
                    capacity=max(0, len(self._owner_of_eni) - (self._router is not None)),
                    needed=int(self._status.get("needed") or 0) or None,
                    error=str(
                        self._status.get("limitReached") or (errors[-1].get("message") if errors else "")
                    ),
                    pool_cidrs=tuple(dict.fromkeys(e.subnet_cidr for e in self._enis)),
                    exhausted=bool(self._status.get("limitReached")) and not self._free(),
                ),
            )

    def problems(self) -> list[str]:
        with self._cond:
            lost = sorted(
                (ip, self._pods.get(owner, owner))
                for owner, ips in self._owners.items()
                for ip in ips
                if ip not in self._owner_of_eni
            )
            router_lost = self._router is not None and self._router not in self._owner_of_eni and self._enis
            limit = str(self._status.get("limitReached") or "")
        found = [
            f"address {ip} of pod {pod} is on none of node {self.node}'s ENIs any more: the VPC no longer "
            "delivers it; delete the pod"
            for ip, pod in lost
        ]
        if router_lost:
            found.append(f"the router IP {self._router} is on none of node {self.node}'s ENIs any more")
        if limit and self._waiting:
            found.append(f"ENI: {limit}")
        return found

    # ---- what the operator and the datapath read ------------------------------------------------

    def used(self) -> dict[str, str]:
        """``used``: address -> owner (namespace/pod, or ``router``)."""
        with self._cond:
            found = {str(self._router): ROUTER_OWNER} if self._router is not None else {}
            for owner, ips in self._owners.items():
                found.update({str(ip): self._pods.get(owner, owner) for ip in ips})
            return found

    def release_ready(self) -> dict[str, int]:
        """Addresses the operator marked that no pod holds (they are not handed out any more),
        each with the epoch of the mark it answers: the operator unassigns only on a match."""
        with self._cond:
            taken = self._taken()
            return {str(a): self._epochs.get(a, 0) for a in sorted(self._marked) if a not in taken}

    def set_wired(self, macs: frozenset[str]) -> None:
        """The ENIs whose link the datapath has set up (their addresses may be handed out)."""
        with self._cond:
            self._wired = macs
            self._cond.notify_all()

    def restored(self) -> None:
        """Every pod from before a restart has its address back: ``used`` may now be reported
        (before, the operator would see their addresses as free and could release them)."""
        with self._cond:
            self._restored = True
        self._kick()

    def enis(self) -> tuple[Eni, ...]:
        with self._cond:
            return self._enis

    def eni_of(self, ip: IPAddress) -> Eni | None:
        """The ENI that owns ``ip`` (any ENI of the node, also below firstInterfaceIndex)."""
        with self._cond:
            return next((e for e in self._enis if ip in e.addresses or ip == e.primary), None)

    def operator_status(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._status)

    def close(self) -> None:
        pass

    def _kick(self, urgent: bool = False) -> None:
        """Hook: the store-backed subclass writes ``used`` after changes."""


class WatchedEniAllocator(EniAllocator):
    """``EniAllocator`` fed by the operator's status in the datastore (etcd keys, or the node's
    PodnetNode on Kubernetes: ``_eni_state``); writes the node's ENI spec once and its
    ``used`` document in the background."""

    def __init__(self, ctx: IPAMContext) -> None:
        from podnet.store import eni as keys

        state = _eni_state(ctx)
        settings = ctx.settings.get("eni") or EniSettings()
        super().__init__(ctx.node_name, settings, ctx)
        self._keys = keys
        self._state = state
        self._writer = Debounced(self._write_used, "eni-used", delay=WRITE_DELAY)
        spec = {**settings.node_spec(), "nodeIP": str(ctx.node_ip or "")}
        if self._state.read(ctx.node_name, keys.SPEC) != spec:
            self._state.write_spec(ctx.node_name, spec)
        self._view = self._state.view(ctx.node_name, self._on_change).start()
        if not self._view.wait_synced(ctx.wait_timeout):
            self._view.stop()
            raise TimeoutError(f"node {ctx.node_name}: the watch of its ENI status did not sync")
        self._on_change()

    def _on_change(self) -> None:
        used = self._view.get_doc(self.node, self._keys.USED)
        self.set_status(self._view.get_doc(self.node, self._keys.STATUS), used.get("used") or {})
        self._kick()  # a new release mark is answered

    def _kick(self, urgent: bool = False) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.kick(urgent)

    def _write_used(self) -> None:
        if not self._restored:
            return  # the pods of a previous run are not restored yet (see restored())
        current = self._view.get_doc(self.node, self._keys.USED)
        used, ready = self.used(), self.release_ready()
        if current.get("used") != used or current.get("releaseReady") != ready:
            self._state.write_used(self.node, used, ready)

    def close(self) -> None:
        self._writer.stop()
        self._view.stop()


def _epoch(mark: Any) -> int:
    """A release mark's epoch (``{"eni": ..., "epoch": n}``; an older operator wrote the ENI ID)."""
    return int(mark.get("epoch", 0)) if isinstance(mark, dict) else 0


register_mode(MODE, WatchedEniAllocator)


def _eni_state(ctx: IPAMContext) -> EniState:
    """Where the datastore keeps the ENI documents: PodnetNode fields, or etcd keys."""
    if ctx.datastore.kind == "kubernetes":
        from podnet.kube.eni import KubeEniState

        return KubeEniState(ctx.datastore.make_client)  # type: ignore[attr-defined]
    store = getattr(ctx.datastore, "store", None)
    if ctx.datastore.kind != "etcd" or store is None:
        raise UnsupportedIPAMMode(f"ipam.mode eni: datastore {ctx.datastore.kind} keeps no ENI state")
    from podnet.store.eni import EtcdEniState

    return EtcdEniState(store)
