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
    cause: str = ""  # what the agents say about it: a refused direct route, a BGP session down
    cause_fix: str = ""


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
    if ctx.pod_cidr is not None and ctx.cause:
        return Drop(ctx.host, "no-route", f"{base}: {ctx.cause}", ctx.cause_fix)
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


@dataclass(frozen=True)
class ProbeLoss:
    """Where a followed probe stopped (``podnet.verify.follow``) and what rose there meanwhile."""

    host: str
    role: str
    between: str  # the next host it never reached ("" when it stopped inside ``host``)
    direction: str  # "node1-p1 -> node2-p1" or, for the echo reply, the way back
    size: int  # bytes of the probe that was lost
    small_passed: bool  # the small probe went through where this full-size one did not
    tunnel: str  # "VXLAN (UDP 8472)" when the probe was inside the tunnel there, else ""
    iface: str = ""  # where it came in
    nft_drops: tuple[str, ...] = ()
    kernel: tuple[tuple[str, int], ...] = ()  # (counter, rise), e.g. ("Ip.FragFails", 2)
    kernel_meaning: tuple[str, ...] = ()  # what each counter means: mtu | no-route | rp-filter | ...
    links: tuple[tuple[str, int], ...] = ()
    ns: str = ""


def probe_drop(ctx: ProbeLoss) -> Drop:
    """Why the probe stopped at ``ctx.host``, from what was traced and counted there; an
    "inconclusive" drop (with the evidence) when nothing there explains it."""
    what = f"{ctx.role} {ctx.host}" if ctx.role in ("router", "node") else ctx.host
    probe = f"the {ctx.size}-byte probe {ctx.direction}" + (f" (inside {ctx.tunnel})" if ctx.tunnel else "")
    counted = ", ".join(f"{k} +{n}" for k, n in ctx.kernel)
    guard = [r for r in ctx.nft_drops if r.split()[1:2] == ["podnet_guard"]]
    if guard:
        return Drop(
            ctx.host,
            "policy",
            f"podnet's pod guard on {what} drops {probe}: {guard[0]}",
            "that is podnet's own policy (the pod guard, docs/security.md): a pod may not spoof its "
            "source, reach the store, BGP or the tunnel ports, or its node beyond ICMP and "
            "podGuard.nodePorts; `podnet drops` shows each drop with its reason",
        )
    if ctx.nft_drops:
        rule = ctx.nft_drops[0]
        reason = f"{what} drops {probe} in nftables: {rule}"
        if ctx.tunnel:
            fix = (
                f"tunnel mode needs {ctx.tunnel} open between every pair of nodes, both ways: allow it in "
                f"that chain on {ctx.host}, or delete the rule (`ip netns exec {ctx.ns} nft -a list ruleset` "
                "shows its handle)"
            )
        else:
            fix = (
                f"allow the pods' traffic in that chain on {ctx.host}, or delete the rule "
                f"(`ip netns exec {ctx.ns} nft -a list ruleset` shows its handle)"
            )
        return Drop(ctx.host, "filter", reason, fix)
    if "mtu" in ctx.kernel_meaning or (ctx.small_passed and not ctx.between):
        evidence = f" ({counted})" if counted else " (the small probe passed)"
        reason = (
            f"MTU: {what} cannot forward {probe} with DF set{evidence}; the sender never lowers its "
            "size, so ICMP 'fragmentation needed' does not reach it or is ignored: a path-MTU black hole"
        )
        fix = (
            f"raise the MTU of {ctx.host}'s next link to fit {ctx.size} bytes, or lower the cluster's MTU "
            "(podnet config set MTU=...) to the path's; and let ICMP 'fragmentation needed'/'packet too "
            "big' through to the nodes"
        )
        return Drop(ctx.host, "mtu", reason, fix)
    if ctx.between and ctx.small_passed:
        return Drop(
            ctx.host,
            "mtu",
            f"MTU: {probe} left {what} and never reached {ctx.between}, while the small probe did: "
            "a device on that link is smaller than the packet",
            f"check the MTU of every device between {ctx.host} and {ctx.between} (both ends and the "
            f"segment's bridge ports), or lower the cluster's MTU",
        )
    if "no-route" in ctx.kernel_meaning:
        return Drop(
            ctx.host,
            "no-route",
            f"{what} has no route for {probe} ({counted})",
            "the routers need the pod CIDRs: bgp.enabled (native routing), or routingMode=tunnel",
        )
    if "rp-filter" in ctx.kernel_meaning:
        return Drop(
            ctx.host,
            "rp-filter",
            f"{what} drops {probe} by reverse-path filtering ({counted})",
            f"set net.ipv4.conf.{ctx.iface or 'all'}.rp_filter=2 (loose) on {ctx.host}, or route the "
            "source back the same way",
        )
    if ctx.links and not ctx.between:
        dropped = ", ".join(f"{k} +{n}" for k, n in ctx.links)
        return Drop(
            ctx.host,
            "link-drop",
            f"{what} took in {probe} and its interfaces dropped packets meanwhile ({dropped})",
            f"look at {ctx.host}'s interfaces: `ip -n {ctx.ns} -s link`",
        )
    where = (
        f"left {what} and was never seen at {ctx.between}"
        if ctx.between
        else (f"entered {what}" + (f" on {ctx.iface}" if ctx.iface else "") + " and was not seen leaving")
    )
    seen = [f"kernel counters: {counted}" if counted else "no kernel drop counter rose"]
    seen.append("no nftables rule traced a drop")
    return Drop(
        ctx.host,
        "inconclusive",
        f"inconclusive: {probe} {where}; nothing {ctx.host} counts explains it ({'; '.join(seen)})",
        f"look for what the kernel does not count on {ctx.host}: tc filters and qdiscs "
        f"(`tc -n {ctx.ns} filter show dev {ctx.iface or '<dev>'} ingress`, `tc -n {ctx.ns} qdisc show`) "
        f"and BPF programs (`ip netns exec {ctx.ns} bpftool net`)",
    )


@dataclass(frozen=True)
class PeerHealth:
    """What a node's own probes of one peer found: its pod side (the peer's router IP, which
    crosses the tunnel in tunnel mode), its node address on the underlay, and a full-size packet."""

    peer: str
    node_ip: str
    reach: str  # tunnel | direct-route | underlay-router | unreachable (the kernel's path)
    tunnel: str  # "VXLAN (UDP 8472)" when the path is the tunnel
    pod_side: bool
    underlay: bool | None  # None: not asked (the pod side answered)
    full_size: bool | None  # None: not asked
    size: int = 0


def peer_health(h: PeerHealth) -> tuple[str, str]:
    """(state, sentence): ``ok``, ``degraded`` (small packets pass, full-size ones do not) or
    ``unreachable``, with what the combination of probes points at."""
    if h.pod_side and h.full_size is False:
        return "degraded", (
            f"small packets pass, a full-size one ({h.size} B, DF) does not: the path's MTU is smaller "
            f"than the pods' ({'the tunnel overhead is not accounted for, or ' if h.tunnel else ''}"
            "a link on the way is smaller); `podnet diagnose` names the hop"
        )
    if h.pod_side:
        return "ok", ""
    if h.underlay:
        if h.tunnel:
            return "unreachable", (
                f"{h.peer} answers on the underlay ({h.node_ip}) but not through the tunnel: {h.tunnel} is "
                "dropped between the nodes (a firewall, a security group, the peer's input filter)"
            )
        return "unreachable", (
            f"{h.peer} answers on the underlay ({h.node_ip}) but its pod CIDR does not: the underlay does "
            "not route the pod CIDR (routers need it from BGP; autoDirectNodeRoutes needs one L2 segment)"
        )
    return "unreachable", (
        f"{h.peer} does not answer on the underlay either ({h.node_ip}): the node is down or the underlay "
        "cannot reach it"
    )
