"""One CNI call as the agent's handler sees it, and what it answers: the validated call
(``Call``), the CNI result of an ADD, and the error answer with the spec's code for each kind of
failure (the datapath and IPAM raise their own errors and know nothing of CNI)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from podnet.cni import answer, spec
from podnet.datapath import endpoint as ep
from podnet.datapath.objects import SCOPE_LINK, Route
from podnet.ipam.host import IPAMExhausted

MAX_CALL_SECONDS = 120.0  # a call without a deadline waits for the node's lock at most this long


_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (IPAMExhausted, spec.ERR_IPAM_EXHAUSTED),
    (ep.NetnsNotFoundError, spec.ERR_NETNS_NOT_FOUND),  # before EndpointError, its base
    (ep.EndpointError, spec.ERR_INTERFACE_SETUP),
    (OSError, spec.ERR_IO_FAILURE),
)


def _code_of(exc: BaseException) -> int:
    """The CNI error code for a datapath or IPAM error (they know nothing of CNI)."""
    return next((code for kind, code in _CODES if isinstance(exc, kind)), spec.ERR_AGENT_INTERNAL)


_MESSAGES = {
    spec.ERR_IPAM_EXHAUSTED: "IPAM exhausted",
    spec.ERR_NETNS_NOT_FOUND: "network namespace not found",
    spec.ERR_INTERFACE_SETUP: "failed to set up pod interface",
    spec.ERR_IO_FAILURE: "I/O failure",
}


def error_answer(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, spec.CniError):
        return {"ok": False, "code": exc.code, "msg": exc.msg, "details": exc.details}
    code = _code_of(exc)
    return {"ok": False, "code": code, "msg": _MESSAGES.get(code, "podnet agent error"), "details": str(exc)}


@dataclass(frozen=True)
class Call:
    command: str
    container_id: str
    netns: str  # the runtime's CNI_NETNS: a label for messages and records, never opened here
    ifname: str
    args: dict[str, str]
    config: dict[str, Any]
    deadline: float = 0.0  # unix seconds; 0: none given (then MAX_CALL_SECONDS)
    netns_fd: int | None = None  # the pod namespace as the plugin opened it
    netns_error: str = ""

    @classmethod
    def of(cls, call: answer.Call) -> Call:
        inv = call.invocation
        return cls(
            command=inv.command,
            container_id=inv.container_id,
            netns=inv.netns,
            ifname=inv.ifname,
            args=spec.parse_cni_args(inv.args),
            config=inv.config,
            deadline=call.deadline,
            netns_fd=call.netns_fd,
            netns_error=call.netns_error,
        )

    def pod_netns(self) -> ep.PodNetns:
        """The namespace the plugin handed over; ADD and CHECK cannot go on without it (code 101)."""
        if self.netns_fd is None:
            why = self.netns_error or f"the plugin passed no descriptor for CNI_NETNS {self.netns}"
            raise ep.NetnsNotFoundError(f"{why}; the container is probably gone")
        return ep.PodNetns(self.netns_fd, self.netns)

    def time_left(self) -> float:
        """Seconds until the caller's deadline (at most ``MAX_CALL_SECONDS``); never negative."""
        if not self.deadline:
            return MAX_CALL_SECONDS
        return max(0.0, min(self.deadline - time.time(), MAX_CALL_SECONDS))

    def check_deadline(self) -> None:
        """Raise (so that the call undoes its work) when the caller has given up already."""
        if self.deadline and time.time() > self.deadline:
            raise spec.CniError(
                spec.ERR_TRY_AGAIN_LATER,
                "podnet agent was too slow",
                f"{self.command} {self.owner} passed its deadline; what it made was undone",
            )

    @property
    def owner(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    def labels(self) -> tuple[tuple[str, str], ...]:
        """The pod's labels as the runtime passes them in the network config (CNI conventions:
        ``args.cni.labels``, a list of ``{"key", "value"}``); what is not a string pair is skipped."""
        args = self.config.get("args")
        cni = args.get("cni") if isinstance(args, dict) else None
        raw = cni.get("labels") if isinstance(cni, dict) else None
        if not isinstance(raw, list):
            return ()
        pairs = {
            item["key"]: item["value"]
            for item in raw
            if isinstance(item, dict)
            and isinstance(item.get("key"), str)
            and isinstance(item.get("value"), str)
        }
        return tuple(sorted(pairs.items()))


def _route_json(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(route.dst)}
    if route.gateway is not None:
        out["gw"] = str(route.gateway)
    if route.mtu:
        out["mtu"] = route.mtu
    if route.scope == SCOPE_LINK:
        out["scope"] = SCOPE_LINK
    return out


def cni_result(
    info: ep.EndpointInfo, route_mtu: int, owns_default: bool, dns: dict[str, Any]
) -> dict[str, Any]:
    """The CNI result: both interfaces, each address with its gateway, and the routes the pod
    got: the on-link route to each gateway and, for the attachment that owns it, a default
    route per family (``mtu``/``scope`` only survive in 1.1.0 results: older ones lack them)."""
    routes = [
        _route_json(route)
        for a in info.addresses
        for route in ep.pod_routes(info.pod_ifname, a, route_mtu, owns_default)
    ]
    return {
        "cniVersion": spec.CURRENT_VERSION,
        "interfaces": [
            {"name": info.host_ifname, "mac": info.host_mac},
            {"name": info.pod_ifname, "mac": info.pod_mac, "sandbox": info.netns_path},
        ],
        "ips": [
            {"address": str(a.address), "gateway": str(a.gateway), "interface": 1} for a in info.addresses
        ],
        "routes": routes,
        "dns": dns,
    }
