"""The agent's ENI component (``ipam.mode: eni``): the ENIs up at MTU 9001, a routing table per
ENI and two rules per pod address (``podnet.datapath.eni``), applied after every round and, for
one pod, at once from its CNI ADD (before the ADD answers) and DEL.

Its status is what ``podnet status`` shows of the node's ENIs: each ENI with its device, subnet,
security groups and addresses (used or free), the instance type's limits, and the operator's last
EC2 calls and errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2 import IPRoute

from podnet.agent.round import RoundPlan
from podnet.config import AgentConfig
from podnet.datapath import eni as dp
from podnet.datapath.guard import EndpointSource
from podnet.ipam.eni import EniAllocator
from podnet.ipam.enimodel import Eni
from podnet.model import IPAddress, NodeInfo
from podnet.statusdoc.modesection import ModeSection

log = logging.getLogger("podnet.agent")

WIRE_RETRY = 1.0  # seconds before another round when an ENI's link is not on the node yet


def port_of(eni: Eni) -> dp.EniPort:
    return dp.EniPort(eni.index, eni.mac, eni.gateway)


class EniRouting:
    name = "eni"

    def __init__(
        self,
        allocator: EniAllocator,
        config: Callable[[], AgentConfig],
        sources: Callable[[], Sequence[EndpointSource]],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._allocator = allocator
        self._wake = wake  # asks the agent for a round (an ENI whose link has not appeared yet)
        self._config = config
        self._sources = sources
        self._lock = threading.Lock()
        self.plan: dp.EniPlan | None = None
        self.errors: list[str] = []

    def _egress_cidrs(self) -> tuple[ipaddress.IPv4Network, ...]:
        """The VPC's CIDRs when masquerading (the rule then only covers traffic inside the VPC)."""
        config = self._config()
        if not config.enable_ipv4_masquerade:
            return ()
        vpc = self._allocator.operator_status().get("vpc") or {}
        cidrs = tuple(ipaddress.IPv4Network(c) for c in vpc.get("cidrs") or ())
        if cidrs:
            return cidrs
        return (config.ipv4_native_routing_cidr,) if config.ipv4_native_routing_cidr else ()

    def _endpoints(self, sources: Sequence[EndpointSource]) -> dict[IPAddress, int]:
        found = {}
        for source in sources:
            for address in source.addresses:
                eni = self._allocator.eni_of(address)
                if eni is not None:
                    found[address] = eni.index
        return found

    def _plan(self, ipr: IPRoute) -> dp.EniPlan:
        """Rules for every pod address, and for the router IP: the node answers from it (health
        pings, the pods' gateway), and that answer must leave through the ENI that owns it too."""
        enis = self._allocator.enis()
        router = EndpointSource("podnet_host", self._allocator.router_ips())
        endpoints = self._endpoints([*self._sources(), router])
        return dp.plan_eni([port_of(e) for e in enis], dp.links_by_mac(ipr), endpoints, self._egress_cidrs())

    def start(self, node: NodeInfo, stop: threading.Event) -> None:
        return None

    def after_round(self, node: NodeInfo, round_plan: RoundPlan, peers: Sequence[NodeInfo]) -> list[str]:
        with self._lock, IPRoute() as ipr:
            plan = self._plan(ipr)
            errors = dp.apply_eni(ipr, plan, lambda text: log.info("eni: %s", text))
            self.plan, self.errors = plan, errors
        enis = self._allocator.enis()
        self._allocator.set_wired(frozenset(e.mac for e in enis if e.mac not in plan.missing_macs))
        if plan.missing:  # a NIC attached a moment ago shows up shortly: look again then
            timer = threading.Timer(WIRE_RETRY, self._wake)
            timer.daemon = True
            timer.start()
        return errors

    def allow(self, source: EndpointSource) -> None:
        """A new pod: its rules before its ADD answers (the round would add them later)."""
        with self._lock, IPRoute() as ipr:
            for address in source.addresses:
                eni = self._allocator.eni_of(address)
                if eni is not None:
                    dp.add_rules(ipr, dp.endpoint_rules(address, port_of(eni), self._egress_cidrs()))

    def revoke(self, source: EndpointSource) -> None:
        with self._lock, IPRoute() as ipr, contextlib.suppress(OSError):
            for address in source.addresses:
                eni = self._allocator.eni_of(address)
                if eni is not None:
                    dp.delete_rules(ipr, dp.endpoint_rules(address, port_of(eni), self._egress_cidrs()))

    def status(self) -> dict[str, Any]:
        """The IPAM mode's section of the status document (``eni``), with the rows status prints."""
        op = self._allocator.operator_status()
        used = self._allocator.used()
        first = self._allocator.settings.first_interface_index
        plan = self.plan
        fields: dict[str, Any] = {
            "instance": {k: op.get(k) for k in ("instanceID", "instanceType", "availabilityZone")},
            "vpc": op.get("vpc") or {},
            "limits": op.get("limits") or {},
            "firstInterfaceIndex": first,
            "needed": op.get("needed"),
            "excess": op.get("excess"),
            "limitReached": op.get("limitReached") or "",
            "enis": [
                {
                    "id": e.id,
                    "device": f"eth{e.index}",
                    "mac": e.mac,
                    "table": e.table,
                    "subnet": f"{e.subnet_id} {e.subnet_cidr}",
                    "primary": str(e.primary),
                    "securityGroups": list(e.security_groups),
                    "forPods": e.index >= first,
                    "addresses": {str(a): used.get(str(a), "") for a in e.addresses},
                }
                for e in self._allocator.enis()
            ],
            "release": sorted(op.get("release") or {}),
            "rules": len(plan.rules) if plan else 0,
            "missingLinks": list(plan.missing) if plan else [],
            "errors": op.get("errors") or [],
            "calls": (op.get("calls") or [])[-10:],
            "datapathErrors": self.errors,
        }
        return ModeSection(self.name, fields, status_rows(fields)).to_json()

    def stop(self) -> None:
        return None  # rules and tables stay: pods keep their traffic while the agent is down


def status_rows(eni: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The instance and its limits, one row per ENI, the operator's last EC2 calls and errors
    (what ``cilium status`` and CiliumNode status.eni show), from the section's own fields."""
    inst, limits = eni.get("instance") or {}, eni.get("limits") or {}
    where = f"{inst.get('instanceID') or '?'} {inst.get('instanceType') or '?'}"
    where += f" in {inst.get('availabilityZone') or '?'}"
    head = (
        f"{where}: "
        f"at most {limits.get('adapters', '?')} ENIs x {limits.get('ipv4PerAdapter', '?')} addresses, "
        f"pods from eth{eni.get('firstInterfaceIndex', 0)} up; needed {eni.get('needed') or 0}, "
        f"excess {eni.get('excess') or 0}"
    )
    rows = [("ENI", head)]
    for e in eni.get("enis") or []:
        addresses = e.get("addresses") or {}
        used = sum(1 for owner in addresses.values() if owner)
        what = f"{used}/{len(addresses)} used" if e.get("forPods") else "not for pods"
        groups = ",".join(e["securityGroups"])
        rows.append(
            (f"  {e['device']}", f"{e['id']} {e['mac']} {e['subnet']} table {e['table']}, {what}, {groups}")
        )
    if eni.get("release"):
        rows.append(("  releasing", ", ".join(eni["release"])))
    if eni.get("limitReached"):
        rows.append(("  LIMIT", eni["limitReached"]))
    for err in (eni.get("errors") or [])[-3:]:
        rows.append(("  EC2 error", f"{err.get('action')}: {err.get('code')}: {err.get('message')}"))
    calls = eni.get("calls") or []
    if calls:
        rows.append(("  EC2 calls", ", ".join(c.get("action", "?") for c in calls[-6:])))
    for problem in (eni.get("missingLinks") or []) + (eni.get("datapathErrors") or []):
        rows.append(("  WARNING", str(problem)))
    return tuple(rows)
