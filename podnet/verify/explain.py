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
    kind: str  # no-route | blackhole | unreachable | prohibit | forwarding | misroute | neighbour | mtu
    # | no-neighbour | no-fdb | arp | loop | no-tunnel-device | filter | pod-firewall | policy | qdisc
    # | tc-filter | rp-filter | link-drop | policy-denied | inconclusive
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


ROUTE_TYPES = {6: "blackhole", 7: "unreachable", 8: "prohibit"}  # rtm_type: what the kernel does


def special_route(host: str, role: str, ns: str, dst: IPAddress, kind: str, route: str, proto: str) -> Drop:
    """``host`` has a route that throws the packet away on purpose: blackhole (silently),
    unreachable (ICMP host unreachable) or prohibit (ICMP administratively prohibited)."""
    what = f"{role} {host}" if role in ("router", "node") else host
    answer = {
        "blackhole": "drops it silently",
        "unreachable": "drops it and answers ICMP host unreachable",
        "prohibit": "drops it and answers ICMP administratively prohibited",
    }[kind]
    owner = f" (installed by {proto})" if proto else ""
    return Drop(
        host,
        kind,
        f"{what} has a {kind} route for {dst}: `{route}`{owner}; the kernel {answer}",
        f"delete it if nothing should stop this traffic: `ip -n {ns} route del {route}`"
        + (" (BIRD put it there: remove it from the router's BGP configuration)" if proto == "bird" else ""),
    )


def forwarding_off(host: str, role: str, ns: str, family: int, iface: str, key: str) -> Drop:
    """``host`` should forward the packet, but forwarding is off for ``family`` (on ``iface``)."""
    what = f"{role} {host}" if role in ("router", "node") else host
    on = f" on {iface}" if iface and ".all." not in key and "ip_forward" not in key else ""
    return Drop(
        host,
        "forwarding",
        f"{what} does not forward IPv{family}{on}: {key}=0, so it drops what it should pass on"
        + (" to its pods" if role == "node" else ""),
        f"turn forwarding back on: `ip netns exec {ns} sysctl -w {key}=1`"
        + (
            " (the agent sets it every round: if it keeps going back to 0, something else on the node "
            "resets it, e.g. a sysctl.d file)"
            if role == "node"
            else ""
        ),
    )


def misroute(
    host: str, role: str, ns: str, dst: IPAddress, route: str, dev: str, target: str, proto: str
) -> Drop:
    """``host`` sends ``dst`` out of ``dev``, which is not the way to ``target``, who holds it."""
    what = f"{role} {host}" if role in ("router", "node") else host
    owned = proto == "podnet"
    return Drop(
        host,
        "misroute",
        f"{what} routes {dst} by `{route}`"
        + (f" (proto {proto})" if proto else "")
        + f", but {dev} does not lead to {target}, which holds {dst}: the packet goes the wrong way",
        f"the agent on {host} installed it: `podnet status --node {host}` shows what it planned"
        if owned
        else f"delete or correct that route: `ip -n {ns} route del {route}`",
    )


def wrong_neighbour(
    host: str, role: str, ns: str, nexthop: IPAddress, dev: str, mac: str, state: str, owner: str,
    owner_macs: str, holder: str,
) -> Drop:  # fmt: skip
    """``host``'s neighbour entry for ``nexthop`` names a MAC that ``owner`` does not have."""
    what = f"{role} {host}" if role in ("router", "node") else host
    static = " (a static entry: it never ages out)" if "PERMANENT" in state else f" (state {state})"
    where = f"{holder}'s" if holder else "no device's in the lab: nobody receives frames sent to it"
    return Drop(
        host,
        "neighbour",
        f"{what}'s neighbour entry for {nexthop} on {dev} says {mac}{static}, but {nexthop} is {owner} "
        f"({owner_macs}); {mac} is {where}",
        f"delete the wrong entry so ARP/ND finds the right one: `ip -n {ns} neigh del {nexthop} dev {dev}`",
    )


def bird_down(router: str, detail: str, start: str) -> tuple[str, str]:
    """(cause, fix) when BIRD does not run on a router that should speak BGP."""
    return (
        f"BIRD is not running on router {router} ({detail}): it has no BGP sessions, so no router "
        "learns the pod CIDRs through it",
        f"start BIRD on {router}{': ' + start if start else ''}; `podnet bgp peers` shows the sessions "
        "once it is back",
    )


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


def no_fdb(host: str, mac: str, dev: str, display: str, where: str = "FDB entry") -> Drop:
    """``where``: what the protocol calls its per-peer entry (``TunnelProtocol.peer_entry``)."""
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
    tunnel: str  # the tunnel's label ("<Protocol> (UDP <port>)") when the probe was inside it there, else ""
    iface: str = ""  # where it came in
    nft_drops: tuple[str, ...] = ()
    kernel: tuple[tuple[str, int], ...] = ()  # (counter, rise), e.g. ("Ip.FragFails", 2)
    kernel_meaning: tuple[str, ...] = ()  # what each counter means: mtu | no-route | rp-filter | ...
    links: tuple[tuple[str, int], ...] = ()
    ns: str = ""
    qdiscs: tuple[tuple[str, int], ...] = ()  # ("to-r2 root qdisc pfifo limit 0", 4)


def traced_drop(host: str, role: str, ns: str, rule: str, what: str, tunnel: str = "") -> Drop:
    """The drop of ``what`` that nftables traced to ``rule`` on ``host``: podnet's pod guard
    (policy), a pod's own firewall, or a filter on a node or router (with the tunnel named when
    the packet was inside it)."""
    who = f"{role} {host}" if role in ("router", "node") else host
    if rule.split()[1:2] == ["podnet_guard"]:
        return Drop(
            host,
            "policy",
            f"podnet's pod guard on {who} drops {what}: {rule}",
            "that is podnet's own policy (the pod guard, docs/security.md): a pod may not spoof its "
            "source, reach the store, BGP or the tunnel ports, or its node beyond ICMP and "
            "podGuard.nodePorts; `podnet drops` shows each drop with its reason",
        )
    if rule.split()[1:2] == ["podnet_policy"]:
        direction = "egress" if " out_check" in rule else "ingress"
        return Drop(
            host,
            "policy-denied",
            f"a NetworkPolicy ({direction}) on {who} drops {what}: {rule}",
            f"the {'source' if direction == 'egress' else 'destination'} pod is isolated for {direction} "
            "and no rule of its policies allows this: `podnet policy show <pod>` lists them and what "
            "they allow; add a rule (or a policy) that allows it, if it should pass",
        )
    listing = f"`ip netns exec {ns} nft -a list ruleset` shows its handle"
    if role == "pod":
        return Drop(
            host,
            "pod-firewall",
            f"pod {host}'s own firewall drops {what}: {rule}",
            f"that ruleset is the pod's, not podnet's: allow the traffic inside pod {host} or remove the "
            f"rule ({listing}; in a cluster, `kubectl exec` into the pod); podnet passed the packet",
        )
    if tunnel:
        fix = (
            f"tunnel mode needs {tunnel} open between every pair of nodes, both ways: allow it in "
            f"that chain on {host}, or delete the rule ({listing})"
        )
    else:
        fix = f"allow the pods' traffic in that chain on {host}, or delete the rule ({listing})"
    return Drop(host, "filter", f"{who} drops {what} in nftables: {rule}", fix)


def probe_drop(ctx: ProbeLoss) -> Drop:
    """Why the probe stopped at ``ctx.host``, from what was traced and counted there; an
    "inconclusive" drop (with the evidence) when nothing there explains it."""
    what = f"{ctx.role} {ctx.host}" if ctx.role in ("router", "node") else ctx.host
    probe = f"the {ctx.size}-byte probe {ctx.direction}" + (f" (inside {ctx.tunnel})" if ctx.tunnel else "")
    counted = ", ".join(f"{k} +{n}" for k, n in ctx.kernel)
    if ctx.nft_drops:
        guard = [r for r in ctx.nft_drops if r.split()[1:2] == ["podnet_guard"]]
        rule = (guard or list(ctx.nft_drops))[0]
        return traced_drop(ctx.host, ctx.role, ctx.ns, rule, probe, ctx.tunnel)
    if ctx.qdiscs:
        qdisc, dropped = ctx.qdiscs[0]
        dev = qdisc.split()[0]
        if qdisc.split()[-1] in ("clsact", "ingress"):  # it holds filters: one of them shot it
            return Drop(
                ctx.host,
                "tc-filter",
                f"{what} took in {probe} and a tc filter on {dev} dropped {dropped} packets meanwhile "
                f"(its {qdisc.split()[-1]} qdisc counts them; nftables and the kernel's counters do not)",
                f"look at the filters and BPF programs on {dev}: `tc -n {ctx.ns} filter show dev {dev} "
                f"ingress` (and egress), `ip netns exec {ctx.ns} bpftool net`; remove the one that drops",
            )
        return Drop(
            ctx.host,
            "qdisc",
            f"{what} took in {probe} and its qdisc ({qdisc}) dropped {dropped} packets meanwhile "
            "(`tc -s qdisc` counts them; nothing else does)",
            f"that queueing discipline throws packets away: `tc -n {ctx.ns} -s qdisc show dev {dev}`; "
            f"remove it (`tc -n {ctx.ns} qdisc del dev {dev} root`) or raise its limit",
        )
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
        fix = (
            "the routers need the pod CIDRs: bgp.enabled (native routing), or routingMode=tunnel"
            if ctx.role == "router"
            else f"`ip -n {ctx.ns} route get` for the destination shows what {ctx.host} lacks; "
            f"`podnet status --node {ctx.host}` what the agent planned"
        )
        return Drop(ctx.host, "no-route", f"{what} has no route for {probe} ({counted})", fix)
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
    tunnel: str  # the tunnel's label ("<Protocol> (UDP <port>)") when the path is the tunnel
    pod_side: bool
    underlay: bool | None  # None: not asked (the pod side answered)
    full_size: bool | None  # None: not asked
    size: int = 0
    local_drop: str = ""  # "podnet_vxlan tx_errors +1": this node failed to send the tunnel packet
    node: str = ""  # the node that probed


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
    if h.local_drop:
        return "unreachable", (
            f"{h.node or 'this node'} itself drops the {h.tunnel or 'tunnel'} packets it sends to {h.peer} "
            f"({h.local_drop}): its own output filter or routing refuses them before they leave "
            "(`podnet diagnose` names the rule)"
        )
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
