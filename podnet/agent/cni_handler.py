"""The agent side of CNI: ADD, DEL, CHECK, GC and STATUS on top of IPAM, endpoint wiring, records.

ADD runs allocate -> record -> wire, pushing an undo for each step on an ``ExitStack`` and
keeping them only when every step succeeded (containernetworking's bridge plugin shape), so a
failed ADD leaves no address, record or veth behind. The record (one ``Endpoint`` JSON file per
attachment, named after its host link) is written *before* the veth exists: after a crash, every
``lxc`` link without a record is an orphan and GC may delete it. Calls are serialized by one lock.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from podnet import owned
from podnet.agent.cni_call import Call, cni_result, error_answer
from podnet.agent.podmeta import PodChanged, PodMeta
from podnet.agent.records import EndpointRecords
from podnet.agent.retired import RetiredLinks
from podnet.cni import answer, spec
from podnet.datapath import endpoint as ep
from podnet.datapath.guard import EndpointSource
from podnet.ipam.base import Allocation, Allocator, PodRef
from podnet.ipam.host import IPAMExhausted, router_ip
from podnet.model import Endpoint

log = logging.getLogger(__name__)

FAILED_ADDS_KEPT = 20


class EndpointGuard(Protocol):
    """Source verification between rounds (``podnet.agent.pod_guard.Guard``)."""

    def allow(self, source: EndpointSource) -> None: ...

    def revoke(self, source: EndpointSource) -> None: ...


def free_addresses(allocator: Allocator) -> int:
    """Assignable addresses left in the family pods are short of first (each pod needs one of every
    family the node has pod CIDRs of)."""
    families = sorted({c.version for c in allocator.cidrs})
    return min((allocator.free(f) for f in families), default=0)


POOL_ARG = "IP_POOL"  # CNI_ARGS: the pool, where no API server describes the pod (datastore etcd)


def pod_ref(call: Call, meta: PodMeta | None) -> PodRef:
    """The pod IPAM allocates for: named by the runtime, described by the API server (without
    one, the runtime may name the pool in CNI_ARGS ``IP_POOL=<pool>``)."""
    annotations = meta.annotations if meta else ()
    if meta is None and call.args.get(POOL_ARG):
        annotations = (("ipam.podnet.io/ip-pool", call.args[POOL_ARG]),)
    return PodRef(
        namespace=call.args.get("K8S_POD_NAMESPACE", ""),
        name=call.args.get("K8S_POD_NAME", ""),
        annotations=annotations,
        namespace_annotations=meta.namespace_annotations if meta else (),
    )


def source_of(record: Endpoint) -> EndpointSource:
    return EndpointSource(record.host_ifname, tuple(a.ip for a in record.addresses))


def _safely(step: str, fn: Callable[..., object], *args: object) -> None:
    """Run a rollback step; a failing undo is logged, never allowed to hide the original error."""
    try:
        fn(*args)
    except Exception:
        log.exception("rollback step %s failed", step)


class PodResolver(Protocol):
    def resolve(self, namespace: str, name: str, uid: str = "") -> PodMeta | None: ...


class CniHandler:
    """Serves ``op: cni`` and ``op: status`` for the agent API (see ``podnet.agent.api``)."""

    def __init__(
        self,
        host_netns: str | None,
        allocator: Allocator,
        route_mtu: int,
        store_dir: str | Path,
        fail_after_ipam: bool = False,
        guard: EndpointGuard | None = None,
        pods: PodResolver | None = None,
    ) -> None:
        self.host_netns = host_netns
        self.pods = pods  # the Pod objects behind CNI_ARGS (datastore: kubernetes)
        self.guard = guard
        self.allocator = allocator
        self.route_mtu = route_mtu
        self.veth_sizes: tuple[int | None, int | None] = (None, None)  # BIG TCP's (IPv6, IPv4) GSO/GRO
        self.store_dir = Path(store_dir)
        self.fail_after_ipam = fail_after_ipam
        self._lock = threading.Lock()
        self.failed_adds: collections.deque[dict[str, Any]] = collections.deque(maxlen=FAILED_ADDS_KEPT)
        self.retired = RetiredLinks(functools.partial(ep.purge_retired, host_netns))
        self.retired.purge_now()  # veths a killed agent retired but never deleted
        self._records = EndpointRecords(self.store_dir)
        for r in self.records():  # one by one: a bad record must not keep the agent from starting
            try:
                allocator.restore({f"{r.container_id}/{r.ifname}": tuple(a.ip for a in r.addresses)})
            except Exception as exc:
                log.warning(
                    "endpoint record %s not restored (%s); it is left for CNI GC or removal by hand",
                    self._records.path(r.container_id, r.ifname),
                    exc,
                )

    def set_route_mtu(self, route_mtu: int) -> list[str]:
        """Give every recorded pod the route MTU ``route_mtu`` (a live mode or MTU change, or a
        restart after one). Runs under the ADD/DEL lock, so a pod being added gets one or the other
        but never keeps a stale MTU. The new MTU is adopted only when every pod took it; the
        returned errors make the agent try again on its next round."""
        with self._lock:
            errors = []
            for record in (r for r in self.records() if r.default_route):
                try:
                    gateways = [a.gateway for a in self._pod_addresses(record)]
                    with ep.find(record.netns_id, record.netns) as pod:
                        if pod is None:
                            errors.append(self._unreachable(record, f"route MTU {route_mtu} not set"))
                            continue
                        ep.set_route_mtu(pod, record.ifname, gateways, route_mtu)
                except Exception as exc:  # one pod's trouble never stops the others
                    errors.append(f"pod {record.container_id}: route MTU {route_mtu} not set: {exc}")
            if not errors:
                self.route_mtu = route_mtu
            return errors

    # ---- records -------------------------------------------------------------------------------

    def records(self) -> list[Endpoint]:
        return self._records.all()

    def sources(self) -> list[EndpointSource]:
        """Every recorded pod interface with the addresses it may send from (the pod guard)."""
        return [source_of(r) for r in self.records()]

    def _load(self, container_id: str, ifname: str) -> Endpoint | None:
        return self._records.load(container_id, ifname)

    def _save(self, record: Endpoint) -> None:
        self._records.save(record)

    def _pod_addresses(self, record: Endpoint) -> tuple[ep.PodAddress, ...]:
        """The record's addresses with their gateways; a record written before gateways were
        recorded gets the router IP of the node's pod CIDR that holds the address."""
        found = []
        for i, address in enumerate(record.addresses):
            gateway = record.gateways[i] if i < len(record.gateways) else None
            if gateway is None:
                cidr = next((c for c in self.allocator.cidrs if address.ip in c), None)
                if cidr is None:
                    raise ep.EndpointError(
                        f"no gateway known for {address}: it is in none of the node's pod CIDRs"
                    )
                gateway = router_ip(cidr)
            found.append(ep.PodAddress(address, gateway))
        return tuple(found)

    def _unreachable(self, record: Endpoint, what: str) -> str:
        """Why a recorded pod could not be reached by the agent itself (a live host link but no
        way into its namespace: no process in it and its path not visible from here)."""
        return (
            f"pod {record.container_id}/{record.ifname}: {what}: its network namespace {record.netns} "
            "is not reachable from the agent (no process in it, path not visible in the agent's mount "
            "namespace)"
        )

    def _owns_default(self, container_id: str) -> bool:
        """Whether another attachment of the container already owns the pod's default route."""
        return any(r.container_id == container_id and r.default_route for r in self.records())

    def _default_route(self, call: Call, existing: Endpoint | None) -> bool:
        """Whether this attachment owns the pod's default route: as the netconf's ``defaultRoute``
        says, else as recorded (a repeated ADD), else when no other attachment owns it."""
        wanted = spec.default_route_of(call.config)
        if wanted is not None:
            return wanted
        if existing is not None:
            return existing.default_route
        return not self._owns_default(call.container_id)

    def _hand_over_default(self, record: Endpoint) -> None:
        """``record`` took the pod's default route: the attachment that had it no longer owns it
        (its DEL must not be thought to take the route with it; it does not)."""
        for other in self.records():
            same_pod = other.container_id == record.container_id and other.ifname != record.ifname
            if same_pod and other.default_route:
                self._save(dataclasses.replace(other, default_route=False))

    def _forget(self, container_id: str, ifname: str) -> None:
        self._records.forget(container_id, ifname)

    # ---- API -----------------------------------------------------------------------------------

    def cni(self, request: answer.Call) -> dict[str, Any]:
        try:
            call = Call.of(request)
            op = {"ADD": self._add, "DEL": self._del, "CHECK": self._check, "GC": self._gc}.get(call.command)
            if call.command == "STATUS":
                return self._status_check()
            if op is None:
                raise spec.CniError(
                    spec.ERR_INVALID_ENV, "invalid CNI environment variables", f"command {call.command!r}"
                )
            if not self._lock.acquire(timeout=call.time_left()):
                raise spec.CniError(
                    spec.ERR_TRY_AGAIN_LATER,
                    "podnet agent is busy",
                    f"{call.command} {call.owner} waited for earlier calls on this node until its deadline",
                )
            try:
                return {"ok": True, "result": op(call)}
            finally:
                self._lock.release()
        except Exception as exc:
            inv = request.invocation
            log.warning("CNI %s %s/%s failed: %s", inv.command, inv.container_id, inv.ifname, exc)
            answer_doc = error_answer(exc)
            if inv.command == "ADD":
                self._failed_add(inv, answer_doc)
            return answer_doc

    def _failed_add(self, inv: Any, answer_doc: dict[str, Any]) -> None:
        """Keep the last failed ADDs: ``podnet ipam`` and ``diagnose`` name a pod that never started."""
        args = dict(p.split("=", 1) for p in inv.args.split(";") if "=" in p)
        pod = (
            f"{args.get('K8S_POD_NAMESPACE', '')}/{args['K8S_POD_NAME']}" if args.get("K8S_POD_NAME") else ""
        )
        self.failed_adds.append(
            {
                "pod": pod,
                "containerID": inv.container_id,
                "code": answer_doc.get("code"),
                "msg": answer_doc.get("msg"),
                "details": answer_doc.get("details"),
                "at": time.time(),
            }
        )

    def status(self) -> dict[str, Any]:
        self.retired.flush()  # the node as it is once the DELs answered so far are done
        records = self.records()
        free = free_addresses(self.allocator)
        return {
            "ok": True,
            "ready": free > 0,
            "freeAddresses": free,
            "endpoints": [r.to_json() for r in records],
        }

    def _status_check(self) -> dict[str, Any]:
        free = free_addresses(self.allocator)
        if free > 0:
            return {"ok": True, "result": {}}
        cidrs = ", ".join(str(c) for c in self.allocator.cidrs) or "none"
        return {
            "ok": False,
            "code": spec.ERR_PLUGIN_NOT_AVAILABLE,
            "msg": "plugin not available",
            "details": f"no free pod addresses (pod CIDRs: {cidrs})",
        }

    # ---- commands ------------------------------------------------------------------------------

    def _add(self, call: Call) -> dict[str, Any]:
        """Allocate, record, wire; on failure undo what *this call* made. A repeated ADD of a live
        attachment re-ensures its wiring and, if that fails, leaves the existing pod alone."""
        existing = self._load(call.container_id, call.ifname)
        fresh = existing is None
        pod = call.pod_netns()
        meta = self._pod_meta(call)  # before IPAM: a pool may follow the pod's annotations
        with contextlib.ExitStack() as undo:
            if fresh:
                undo.callback(_safely, "release", self.allocator.release, call.owner)
            addresses = self._addresses(self.allocator.allocate(call.owner, pod_ref(call, meta)), call.owner)
            if self.fail_after_ipam:
                raise spec.CniError(
                    spec.ERR_INJECTED, "injected failure after IPAM", "fail_after_ipam is set"
                )
            record = Endpoint(
                container_id=call.container_id,
                ifname=call.ifname,
                netns=call.netns,
                host_ifname=owned.endpoint_host_ifname(call.container_id, call.ifname),
                addresses=tuple(a.address for a in addresses),
                gateways=tuple(a.gateway for a in addresses),
                default_route=self._default_route(call, existing),
                pod_name=call.args.get("K8S_POD_NAME", ""),
                pod_namespace=call.args.get("K8S_POD_NAMESPACE", ""),
                netns_id=pod.identity(),
                pod_uid=meta.uid if meta else call.args.get("K8S_POD_UID", ""),
                pod_labels=meta.labels if meta else call.labels(),
                pod_annotations=meta.annotations if meta else (),
                namespace_labels=meta.namespace_labels if meta else (),
            )
            if fresh:
                undo.callback(_safely, "forget record", self._forget, call.container_id, call.ifname)
                self._save(record)
                undo.callback(
                    _safely, "delete veth", ep.del_endpoint, self.host_netns, call.container_id, call.ifname
                )
            if self.guard is not None:  # the pod may send from its addresses before it can send at all
                self.guard.allow(source_of(record))
                if fresh:
                    undo.callback(_safely, "revoke guard", self.guard.revoke, source_of(record))
            if existing is not None and existing != record:
                self._save(record)  # a runtime's retry in a new namespace, or a new defaultRoute
            info = ep.add_endpoint(
                self.host_netns, pod, call.container_id, call.ifname, addresses, self.route_mtu,
                record.default_route, self.veth_sizes,
            )  # fmt: skip
            call.check_deadline()  # the plugin gave up: undo, so nothing is left that it reported failed
            if record.default_route:
                self._hand_over_default(record)
            undo.pop_all()
        return cni_result(info, self.route_mtu, record.default_route, spec.dns_of(call.config))

    def _pod_meta(self, call: Call) -> PodMeta | None:
        if self.pods is None:
            return None
        args = call.args
        try:
            return self.pods.resolve(
                args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", ""), args.get("K8S_POD_UID", "")
            )
        except PodChanged as exc:
            raise spec.CniError(spec.ERR_TRY_AGAIN_LATER, "pod changed under the sandbox", str(exc)) from None

    def _addresses(self, allocations: Sequence[Allocation], owner: str) -> tuple[ep.PodAddress, ...]:
        """One host-prefix address per allocation, each with the gateway IPAM gave it."""
        if not allocations:
            raise IPAMExhausted(f"IPAM gave {owner} no address")
        return tuple(
            ep.PodAddress(ipaddress.ip_interface(f"{a.ip}/{a.ip.max_prefixlen}"), a.gateway)
            for a in allocations
        )

    def _del(self, call: Call) -> dict[str, Any]:
        """Unplug now (its routes go with the link's state), release, forget; the veth itself is
        deleted right after, in a batch (``podnet.agent.retired``)."""
        record = self._load(call.container_id, call.ifname)
        # the pod side is only touched for an attachment podnet recorded (never a stranger's veth)
        pod = ep.PodNetns(call.netns_fd, call.netns) if record and call.netns_fd is not None else None
        if ep.retire_endpoint(self.host_netns, call.container_id, call.ifname, pod):
            self.retired.kick()
        if record is not None and self.guard is not None:
            self.guard.revoke(source_of(record))
        self.allocator.release(call.owner)
        self._forget(call.container_id, call.ifname)
        return {}

    def _check(self, call: Call) -> dict[str, Any]:
        record = self._load(call.container_id, call.ifname)
        if record is None:
            raise spec.CniError(
                spec.ERR_CHECK_FAILED, "CHECK failed", f"no podnet attachment recorded for {call.owner}"
            )
        addresses = self._pod_addresses(record)
        problems = []
        prev_ips = set(spec.prev_result_ips(call.config))
        missing = [str(a.address) for a in addresses if str(a.address) not in prev_ips]
        if prev_ips and missing:
            problems.append(
                f"prevResult ips {sorted(prev_ips)} do not include the recorded {', '.join(missing)}"
            )
        try:
            pod = call.pod_netns()
        except ep.NetnsNotFoundError as exc:
            raise spec.CniError(
                spec.ERR_CHECK_FAILED, "CHECK failed", "; ".join([*problems, str(exc)])
            ) from None
        problems += ep.check_endpoint(
            self.host_netns, pod, call.container_id, call.ifname, addresses, self.route_mtu,
            record.default_route,
        )  # fmt: skip
        if problems:
            raise spec.CniError(spec.ERR_CHECK_FAILED, "CHECK failed", "; ".join(problems))
        return {}

    def _gc(self, call: Call) -> dict[str, Any]:
        valid = spec.valid_attachments(call.config)
        failures: list[str] = []
        records = self.records()
        for record in records:
            if (record.container_id, record.ifname) in valid:
                continue
            try:
                self._remove(record)
            except Exception as exc:
                failures.append(f"{record.container_id}/{record.ifname}: {exc}")
        known = {r.host_ifname for r in records}
        failures += self._delete_orphan_links(known)
        if failures:
            raise spec.CniError(spec.ERR_INTERFACE_SETUP, "GC incomplete", "; ".join(failures))
        return {}

    def stale(self) -> list[Endpoint]:
        """Recorded attachments whose node-side link is gone: the pod's namespace was destroyed
        (which deletes both veth ends) without a CNI DEL, or the agent died between recording an
        ADD and wiring it."""
        with self._lock:
            return self._stale()

    def _stale(self) -> list[Endpoint]:
        links = set(ep.list_endpoints(self.host_netns))
        return [r for r in self.records() if r.host_ifname not in links]

    def reap_stale(self) -> list[Endpoint]:
        """Release every stale attachment (addresses, guard entries, records); returns them. Under
        the call lock, so an ADD between recording and wiring is never taken for stale."""
        with self._lock:
            gone = self._stale()
            for record in gone:
                self._remove(record)
            return gone

    def _remove(self, record: Endpoint) -> None:
        """Remove an attachment the runtime no longer lists (GC) or whose pod is gone (reaper)."""
        if not ep.del_endpoint(self.host_netns, record.container_id, record.ifname):
            with ep.find(record.netns_id, record.netns) as pod:  # a peer left behind, if any
                if pod is not None:
                    ep.del_endpoint(self.host_netns, record.container_id, record.ifname, pod)
        if self.guard is not None:
            self.guard.revoke(source_of(record))
        self.allocator.release(f"{record.container_id}/{record.ifname}")
        self._forget(record.container_id, record.ifname)

    def _delete_orphan_links(self, known: set[str]) -> list[str]:
        """Delete ``lxc`` links that no record names (left by a crash mid-ADD); return failures."""
        failures = []
        for name in ep.list_endpoints(self.host_netns):
            if name in known:
                continue
            try:
                ep.delete_host_link(self.host_netns, name)
            except Exception as exc:
                failures.append(f"orphan link {name}: {exc}")
        return failures
