"""What ``podnet status`` reports per node: the agent's typed status document
(``podnet.statusdoc.document.StatusDocument``) next to what the node's kernel has (device MTUs,
the masquerade rule, each peer's path as ``ip route get`` chose it, podnet's own objects).
``to_json`` is ``podnet status -o json``'s node document, with the keys it always had."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.document import StatusDocument


@dataclass(frozen=True)
class PeerReport:
    """One peer: the path the agent planned, the one the kernel takes, and its health."""

    name: str
    node_ip: str | None
    pod_cidrs: tuple[str, ...]
    planned_reach: str
    why: str
    kernel_reach: str  # tunnel | direct-route | underlay-router | unreachable
    path: str
    agrees: bool
    health: str  # ok | degraded | unreachable | unknown
    health_detail: str = ""
    issues: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodeIP": self.node_ip,
            "podCIDRs": list(self.pod_cidrs),
            "plannedReach": self.planned_reach,
            "why": self.why,
            "kernelReach": self.kernel_reach,
            "path": self.path,
            "agrees": self.agrees,
            "health": self.health,
            "healthDetail": self.health_detail,
            "issues": list(self.issues),
        }


@dataclass(frozen=True)
class KernelDevice:
    name: str
    mtu: int
    kind: str


@dataclass(frozen=True)
class KernelObjects:
    """Every kernel object carrying podnet's marks (``--verbose``)."""

    devices: tuple[KernelDevice, ...] = ()
    routes: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()
    fdb: tuple[str, ...] = ()
    nft_table: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": {d.name: {"mtu": d.mtu, "kind": d.kind} for d in self.devices},
            "routes": list(self.routes),
            "neighbours": list(self.neighbours),
            "fdb": list(self.fdb),
            "nftTable": self.nft_table,
        }


@dataclass(frozen=True)
class NodeReport:
    agent: StatusDocument
    routing_summary: str = ""
    masquerade_in_kernel: bool = False  # a masquerade or SNAT rule in podnet's nft table
    kernel_device_mtu: int | None = None  # the underlay device's MTU as the kernel has it
    tunnel_device: KernelDevice | None = None
    bpf: Mapping[str, Any] = field(default_factory=dict)  # the tunnel protocol's own programs and maps
    peers: tuple[PeerReport, ...] = ()
    kernel: KernelObjects | None = None  # --verbose

    def to_json(self) -> dict[str, Any]:
        doc = self.agent
        if doc.unanswered:
            return {"agent": {"ready": False, "error": doc.unanswered}}
        routing, masq, ipam = doc.routing, doc.masquerade, doc.ipam
        out: dict[str, Any] = {
            "agent": {
                "ready": doc.ready,
                "phase": doc.phase,
                "errors": list(doc.errors),
                "reconciles": doc.reconciles,
            },
            "node": doc.node.to_json() if doc.node is not None else None,
            "kvstore": doc.kvstore.to_json(),
            "kubernetes": doc.kubernetes.to_json(),
            "bpf": dict(self.bpf),
            "hostRouting": doc.host_routing.to_json(),
            "drops": doc.drops.to_json() if doc.drops is not None else None,
            "routing": {**routing.to_json(), "summary": self.routing_summary},
            "nativeRoutingCIDR": ", ".join(routing.native_routing_cidrs) or None,
            "masquerading6": masq.ipv6.to_json() if masq.enabled is not None else {},
            "masquerading": {
                "enabled": masq.enabled,
                "kernel": self.masquerade_in_kernel,
                "mode": masq.mode,
                "device": masq.device,
                "exempt": list(masq.exempt),
            },
            "pathMTU": [c.to_json() for c in doc.path_mtu.failing()],
            "guard": doc.guard.to_json(),
            "policy": doc.policy.to_json(),
            "endpoints": doc.endpoints.to_json(),
            "bgp": doc.bgp.to_json(),
        }
        if doc.mode_section is not None:
            out[doc.mode_section.name] = doc.mode_section.to_json()
        out["mtu"] = self._mtu()
        out["ipam"] = {
            "mode": ipam.mode if ipam else None,
            "podCIDRs": list(ipam.pod_cidrs) if ipam else None,
            "used": ipam.used if ipam else None,
            "total": ipam.total if ipam else None,
            "pools": [p.to_json() for p in ipam.pools] if ipam and ipam.pools is not None else None,
        }
        out["peers"] = [p.to_json() for p in self.peers]
        if self.kernel is not None:
            out["ipam"]["allocations"] = {k: list(v) for k, v in ipam.allocations.items()} if ipam else {}
            out["kernel"] = self.kernel.to_json()
        return out

    def _mtu(self) -> dict[str, Any]:
        mtu = self.agent.mtu.to_json() if self.agent.mtu is not None else {}
        if self.kernel_device_mtu is not None:
            mtu["kernelDevice"] = self.kernel_device_mtu
        if self.tunnel_device is not None:
            mtu["kernelTunnelDevice"] = {"name": self.tunnel_device.name, "mtu": self.tunnel_device.mtu}
        return mtu


@dataclass(frozen=True)
class ClusterReport:
    """``podnet status``: every node's report, keyed by the name each agent reports."""

    lab: str | None
    nodes: Mapping[str, NodeReport]
    control_plane: Sequence[Mapping[str, Any]] = ()  # the lab's supervised processes

    @property
    def ready(self) -> bool:
        return all(n.agent.ready and not n.agent.unanswered for n in self.nodes.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "nodes": {name: node.to_json() for name, node in self.nodes.items()},
            "controlPlane": [dict(p) for p in self.control_plane],
        }
