"""Why a packet is dropped and what fixes it, as pure functions of what the path walk found.

The walk (``podnet.verify.diagnose``) reads the kernel; this module only turns its findings into
the sentences a user reads, e.g. ``router r1 has no route to 10.244.2.0/24: native routing needs
BGP (bgp.enabled) or use routingMode=tunnel``. Pure, so every sentence is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.model import IPAddress, IPNetwork


@dataclass(frozen=True)
class Drop:
    """Where and why a packet stops, and the fix."""

    host: str
    kind: str  # no-route | mtu | no-neighbour | no-fdb | arp | loop | no-tunnel-device
    reason: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"host": self.host, "kind": self.kind, "reason": self.reason, "fix": self.fix}


@dataclass(frozen=True)
class RouteContext:
    """What is known about a destination when a host has no route to it."""

    host: str
    role: str  # router | node | pod | external | controlplane
    dst: IPAddress
    pod_cidr: IPNetwork | None  # the cluster pod CIDR holding dst, if any
    routing_mode: str  # tunnel | native | "" (unknown)
    reply_to_pod_from_outside: bool = False  # reply path of pod -> non-cluster address
    src_node: str = ""  # the node of the pod whose reply is lost
    masquerade_active: bool = False
    kernel_error: str = ""


def no_route(ctx: RouteContext) -> Drop:
    """The drop at a host whose kernel has no route to the destination."""
    target = str(ctx.pod_cidr) if ctx.pod_cidr is not None else str(ctx.dst)
    what = f"{ctx.role} {ctx.host}" if ctx.role in ("router", "node") else ctx.host
    base = f"{what} has no route to {target}"
    if ctx.kernel_error:
        base += f" (kernel: {ctx.kernel_error})"
    if ctx.reply_to_pod_from_outside and ctx.pod_cidr is not None:
        state = "is in place but did not apply" if ctx.masquerade_active else "is missing"
        return Drop(
            ctx.host,
            "no-route",
            f"{base}: the reply to pod {ctx.dst} is lost on the way back",
            f"pod traffic leaving the cluster must be masqueraded to the node address "
            f"(enableIPv4Masquerade); the masquerade rule on {ctx.src_node or 'the node'} {state} "
            f"(nft table podnet)",
        )
    if ctx.pod_cidr is not None and ctx.role == "router":
        if ctx.routing_mode == "native":
            fix = "native routing needs BGP (bgp.enabled) or use routingMode=tunnel"
        else:
            fix = (
                "pod packets should not reach the underlay routers in tunnel mode: check the node's "
                "tunnel routes (podnet status), or let the routers learn pod CIDRs with BGP"
            )
        return Drop(ctx.host, "no-route", f"{base}: {fix}", fix)
    if ctx.pod_cidr is not None and ctx.role == "node":
        fix = (
            f"the agent on {ctx.host} installed no route for this pod CIDR: read the peer issues in "
            f"`podnet status --node {ctx.host}` (native routing across routers needs BGP or tunnel mode)"
        )
        return Drop(ctx.host, "no-route", base, fix)
    return Drop(ctx.host, "no-route", base, f"add a route or a default gateway on {ctx.host}")


@dataclass(frozen=True)
class MtuContext:
    """A packet that does not fit a device on the path."""

    host: str
    device: str  # "segment net2 port node2", "r2 dev to-r1", ...
    device_mtu: int
    packet: int  # bytes on the wire at that point (outer size when tunnelled)
    inner: int  # the pod packet's size
    overhead: int  # tunnel bytes added (0 in native mode)
    fix_command: str = ""


def mtu_drop(ctx: MtuContext) -> Drop:
    """A full-size packet that is larger than one device's MTU on the path."""
    size = f"{ctx.inner} + {ctx.overhead} tunnel = {ctx.packet}" if ctx.overhead else f"{ctx.packet}"
    reason = (
        f"MTU: a full-size packet ({size} bytes) does not fit {ctx.device} (MTU {ctx.device_mtu}); "
        f"it is dropped at {ctx.host}"
    )
    lower = ctx.device_mtu - ctx.overhead
    fix = f"raise the MTU of {ctx.device} to {ctx.packet}"
    if ctx.fix_command:
        fix += f" ({ctx.fix_command.format(mtu=ctx.packet)})"
    fix += f", or set the cluster MTU to {lower} so pod routes carry mtu {lower}"
    return Drop(ctx.host, "mtu", reason, fix)


def no_neighbour(host: str, nexthop: IPAddress, dev: str, state: str) -> Drop:
    if dev.startswith("podnet_"):
        return Drop(
            host,
            "no-neighbour",
            f"{host} has no neighbour entry for {nexthop} on {dev} (state {state or 'none'})",
            f"the agent on {host} has not programmed this peer: check `podnet status --node {host}`",
        )
    return Drop(
        host,
        "arp",
        f"nobody answers ARP for {nexthop} on {host} {dev} (neighbour state {state or 'none'})",
        f"check that {nexthop} is up and on the same segment as {host} {dev}",
    )


def no_fdb(host: str, mac: str, dev: str, display: str = "VXLAN") -> Drop:
    where = "FDB entry" if display == "VXLAN" else "peer map entry"
    return Drop(
        host,
        "no-fdb",
        f"{host} has no {where} for {mac} on {dev}: {display} does not know the remote node",
        f"the agent on {host} has not programmed this peer: check `podnet status --node {host}`",
    )
