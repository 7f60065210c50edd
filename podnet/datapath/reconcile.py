"""Make the kernel match a ``DesiredState``: read what podnet owns, diff, apply, prune orphans.

Scope (what this reconciler owns): main-table routes with ``proto 201`` except those on ``lxc*``
devices (per-pod routes belong to ``podnet.datapath.endpoint``), rules with ``proto 201``, and
permanent neighbour and FDB entries on podnet's tunnel devices. Anything else is never read as
"current" and so never deleted. Order: neighbours, FDB entries, routes, then rules (a route never
points at a missing neighbour, a rule never at an empty table); deletions in
reverse. One failing change never stops the others: errors are gathered.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from podnet import owned
from podnet.datapath.kernel import link as klink
from podnet.datapath.kernel import neigh as kneigh
from podnet.datapath.kernel import route as kroute
from podnet.datapath.kernel import rule as krule
from podnet.datapath.kernel import sysctl as ksysctl
from podnet.datapath.modes.base import DesiredState, PeerIssue
from podnet.datapath.objects import FdbEntry, Neighbour, Route, Rule
from podnet.datapath.tunnels import TunnelProtocol, all_protocols

log = logging.getLogger(__name__)

KernelObject = Route | Neighbour | FdbEntry | Rule
T = TypeVar("T", Route, Neighbour, FdbEntry, Rule)


class Op(enum.StrEnum):
    ADD = "add"
    REPLACE = "replace"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    op: Op
    obj: KernelObject

    def describe(self) -> str:
        kind = {Route: "route", Neighbour: "neigh", FdbEntry: "fdb", Rule: "rule"}[type(self.obj)]
        return f"{self.op} {kind} {self.obj.describe()}"


@dataclass(frozen=True)
class CurrentState:
    """What the kernel has inside the reconciler's scope."""

    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class ReconcileReport:
    changes: tuple[Change, ...]
    errors: tuple[str, ...]
    issues: tuple[PeerIssue, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def in_scope(route: Route) -> bool:
    """True for the routes this reconciler manages (see the module docstring)."""
    return route.protocol == owned.ROUTE_PROTOCOL and not route.dev.startswith(owned.ENDPOINT_PREFIX)


def _diff_keyed(
    current: Iterable[T], desired: Iterable[T], key: Callable[[T], object]
) -> tuple[list[Change], list[Change]]:
    have = {key(o): o for o in current}
    want = {key(o): o for o in desired}
    upserts = [
        Change(Op.ADD if k not in have else Op.REPLACE, o) for k, o in want.items() if have.get(k) != o
    ]
    deletes = [Change(Op.DELETE, o) for k, o in have.items() if k not in want]
    return upserts, deletes


def diff(current: CurrentState, desired: DesiredState) -> tuple[Change, ...]:
    """Changes that turn ``current`` into ``desired``, in the order to apply them."""
    n_up, n_del = _diff_keyed(current.neighbours, desired.neighbours, lambda n: (n.dst, n.dev))
    f_up, f_del = _diff_keyed(current.fdb, desired.fdb, lambda f: (f.lladdr, f.dev))
    r_up, r_del = _diff_keyed(current.routes, desired.routes, lambda r: r.key)
    r_up = sorted(r_up, key=lambda c: -c.obj.dst.prefixlen)  # host routes before the routes via them
    u_up, u_del = _diff_keyed(current.rules, desired.rules, lambda u: u)
    return tuple(n_up + f_up + r_up + u_up + u_del + r_del + f_del + n_del)


class Reconciler:
    """Applies desired states through one ``IPRoute`` socket bound to the node's namespace."""

    def __init__(self, ipr: IPRoute, allow_initial_netns: bool = False) -> None:
        ksysctl.refuse_initial_netns(ipr, "reconcile routes", allow_initial_netns)
        self.ipr = ipr
        self._indexes: dict[str, int] = {}
        self._applied: CurrentState | None = None  # what the last apply left, when it fully succeeded

    def tunnel_devices(self) -> dict[str, int]:
        """podnet's tunnel devices that exist now, name -> index."""
        found = {}
        for protocol in all_protocols():
            index = klink.link_index(self.ipr, protocol.device)
            if index is not None:
                found[protocol.device] = index
        return found

    def current(self) -> CurrentState:
        routes = tuple(r for r in kroute.dump_owned_routes(self.ipr) if in_scope(r))
        neighbours: list[Neighbour] = []
        fdb: list[FdbEntry] = []
        for dev, index in self.tunnel_devices().items():
            neighbours.extend(kneigh.dump_neighbours(self.ipr, index, dev))
            fdb.extend(self._protocol(dev).dump_peers(self.ipr, index, dev))
        rules = tuple(krule.dump_rules(self.ipr, owned.ROUTE_PROTOCOL))
        return CurrentState(routes=routes, neighbours=tuple(neighbours), fdb=tuple(fdb), rules=rules)

    def apply(self, desired: DesiredState, resync: bool = True) -> ReconcileReport:
        """Bring the kernel to ``desired``; applying the same state twice changes nothing.

        The kernel is read once (``current``) and each change is one netlink call: the diff
        already says whether an object exists, so nothing is read again per object (1000 peers
        are 3000 changes; reading the neighbour table before each of them made it quadratic).
        With ``resync=False`` the diff starts from what the last fully successful apply left
        (Felix's route table does the same between resyncs): a round for one joining peer then
        costs its own changes, not a dump of every peer's entries. Call with ``resync=True``
        periodically, so that what someone changed behind podnet's back is repaired."""
        done: list[Change] = []
        errors: list[str] = []
        self._indexes = {name: index for index, name in kroute.link_names(self.ipr).items()}
        current = self._applied if (self._applied is not None and not resync) else self.current()
        self._applied = None
        for change in diff(current, desired):
            try:
                self._apply_one(change)
            except (NetlinkError, LookupError, OSError) as exc:
                message = f"failed to {change.describe()}: {exc}"
                log.warning("%s", message)
                errors.append(message)
            else:
                done.append(change)
        if not errors:
            self._applied = CurrentState(desired.routes, desired.neighbours, desired.fdb, desired.rules)
        return ReconcileReport(changes=tuple(done), errors=tuple(errors), issues=desired.issues)

    @staticmethod
    def _protocol(dev: str) -> TunnelProtocol:
        found = next((p for p in all_protocols() if p.device == dev), None)
        if found is None:
            raise LookupError(f"{dev} is no tunnel device")
        return found

    def _index(self, dev: str) -> int:
        index = self._indexes.get(dev)
        if index is None:
            raise LookupError(f"device {dev} does not exist")
        return index

    def _apply_one(self, change: Change) -> None:
        obj = change.obj
        if change.op is Op.DELETE:
            self._delete(obj)
        elif isinstance(obj, Route):  # ADD refuses a foreign route for the destination; REPLACE ours
            (kroute.add_route if change.op is Op.ADD else kroute.replace_route)(
                self.ipr, obj, self._index(obj.dev)
            )
        elif isinstance(obj, Rule):
            krule.ensure_rule(self.ipr, obj)
        elif isinstance(obj, Neighbour):
            kneigh.replace_neighbour(self.ipr, self._index(obj.dev), obj)
        else:
            self._protocol(obj.dev).set_peer(self.ipr, self._index(obj.dev), obj)

    def _delete(self, obj: KernelObject) -> None:
        if isinstance(obj, Route):
            kroute.delete_route(self.ipr, obj)
        elif isinstance(obj, Rule):
            krule.delete_rule(self.ipr, obj)
        elif isinstance(obj, Neighbour):
            kneigh.delete_neighbour(self.ipr, self._index(obj.dev), obj)
        else:
            self._protocol(obj.dev).delete_peer(self.ipr, self._index(obj.dev), obj)
