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
from podnet.datapath.tunnels import all_protocols

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
    u_up, u_del = _diff_keyed(current.rules, desired.rules, lambda u: u)
    return tuple(n_up + f_up + r_up + u_up + u_del + r_del + f_del + n_del)


class Reconciler:
    """Applies desired states through one ``IPRoute`` socket bound to the node's namespace."""

    def __init__(self, ipr: IPRoute, allow_initial_netns: bool = False) -> None:
        ksysctl.refuse_initial_netns(ipr, "reconcile routes", allow_initial_netns)
        self.ipr = ipr

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
            fdb.extend(kneigh.dump_fdb(self.ipr, index, dev))
        rules = tuple(krule.dump_rules(self.ipr, owned.ROUTE_PROTOCOL))
        return CurrentState(routes=routes, neighbours=tuple(neighbours), fdb=tuple(fdb), rules=rules)

    def apply(self, desired: DesiredState) -> ReconcileReport:
        """Bring the kernel to ``desired``; applying the same state twice changes nothing."""
        done: list[Change] = []
        errors: list[str] = []
        for change in diff(self.current(), desired):
            try:
                self._apply_one(change)
            except (NetlinkError, LookupError, OSError) as exc:
                message = f"failed to {change.describe()}: {exc}"
                log.warning("%s", message)
                errors.append(message)
            else:
                done.append(change)
        return ReconcileReport(changes=tuple(done), errors=tuple(errors), issues=desired.issues)

    def _index(self, dev: str) -> int:
        index = klink.link_index(self.ipr, dev)
        if index is None:
            raise LookupError(f"device {dev} does not exist")
        return index

    def _apply_one(self, change: Change) -> None:
        obj = change.obj
        delete = change.op is Op.DELETE
        if isinstance(obj, Route):
            if delete:
                kroute.delete_route(self.ipr, obj)
            else:
                kroute.ensure_route(self.ipr, obj, lambda d: klink.link_index(self.ipr, d))
        elif isinstance(obj, Rule):
            (krule.delete_rule if delete else krule.ensure_rule)(self.ipr, obj)
        elif isinstance(obj, Neighbour):
            index = self._index(obj.dev)
            (kneigh.delete_neighbour if delete else kneigh.ensure_neighbour)(self.ipr, index, obj)
        else:
            index = self._index(obj.dev)
            (kneigh.delete_fdb if delete else kneigh.ensure_fdb)(self.ipr, index, obj)
