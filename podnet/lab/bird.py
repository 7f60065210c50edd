"""BGP on the lab's routers: one BIRD 2 daemon per router namespace, configured from the topology.

Each router with an ``asn`` peers with the nodes that name it in their ``bgp.peers`` (passive:
the node's speaker connects, so a late node is learnt at once instead of after BIRD's connect
retry) and with every router at the other end of its point-to-point links (eBGP, or iBGP with
``next hop self`` when the ASNs are equal). Imports and exports accept only pod-CIDR-sized
prefixes inside the cluster pools (``10.244.0.0/16{24,24}``); the kernel protocol installs the
learnt routes (``proto bird``), merging equal paths (ECMP) unless the router says
``bgp: {multipath: false}``. BIRD runs only when at least one node has ``bgp.enabled``.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.bgp.speaker import router_id_from
from podnet.lab import state as st
from podnet.lab.build import LabError
from podnet.lab.topology import Host, Topology
from podnet.registry import IPAM_MODES
from podnet.util.files import write_private
from podnet.util.proc import spawn

BIRD = "bird"
BIRDC = "birdc"
CONVERGE_TIMEOUT = 30.0  # seconds for every router to learn every pod CIDR
START_TIMEOUT = 10.0
ROUTER_BGP_KEYS = {"enabled", "multipath", "holdTime", "keepaliveTime"}


IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class RouterBgpError(LabError):
    """A router's BGP cannot be configured; the message names the router, node or key."""


@dataclass(frozen=True)
class BirdNeighbor:
    """``protocol bgp <name> { neighbor <address> as <asn>; local <local> as <router asn>; }``."""

    name: str
    kind: str  # "node" | "router"
    description: str
    address: IPAddr  # its family is the session's: an IPv6 neighbour has an ipv6 channel
    asn: int
    local_address: IPAddr
    passive: bool = False
    password: str | None = None
    hold_time: int = 9
    keepalive_time: int = 3
    ttl_security: bool = False


@dataclass(frozen=True)
class RouterBgp:
    """Everything one router's BIRD needs (pure data: ``render_bird_config`` turns it into text)."""

    router: str
    asn: int
    router_id: ipaddress.IPv4Address
    neighbors: tuple[BirdNeighbor, ...]
    pod_prefixes: tuple[tuple[IPNet, int, int], ...]  # (CIDR, shortest, longest), both families
    multipath: bool = True


def bird_dir(lab: str) -> Path:
    return st.lab_dir(lab) / "bird"


def control_socket(lab: str, router: str) -> Path:
    return bird_dir(lab) / f"{router}.ctl"


# ---------------------------------------------------------------------------------------------
# planning (pure)


def _router_options(router: Host) -> Mapping[str, Any]:
    for key in router.bgp:
        if key not in ROUTER_BGP_KEYS:
            raise RouterBgpError(
                f"routers.{router.name}.bgp.{key}: unknown key (known: {', '.join(sorted(ROUTER_BGP_KEYS))})"
            )
    return router.bgp


def pod_prefixes(cfg: Any) -> tuple[tuple[IPNet, int, int], ...]:
    """What the routers accept from nodes, as a network admin would filter: the cluster pools'
    node CIDRs, any prefix inside them for a mode that lists a node's addresses one by one (they
    collapse to prefixes of every length: ``IpamSpec.any_prefix_length``), and what the mode adds
    (``ModeSettings.prefixes``: its own pools' CIDRs at their mask sizes, say); IPv6 ones too when
    the cluster runs IPv6."""
    spec = IPAM_MODES.spec(cfg.ipam_mode)
    own = spec.part("settings")
    families = []
    if cfg.enable_ipv4:
        families.append(("ipv4", cfg.cluster_pool_ipv4_cidrs, cfg.cluster_pool_ipv4_mask_size, 32))
    if cfg.enable_ipv6:
        families.append(("ipv6", cfg.cluster_pool_ipv6_cidrs, cfg.cluster_pool_ipv6_mask_size, 128))
    found: list[tuple[IPNet, int, int]] = []
    for family, cidrs, mask, longest in families:
        found += [(c, mask, longest if spec.any_prefix_length else mask) for c in cidrs]
        found += own.prefixes(cfg, family, mask) if own else []
    return tuple(dict.fromkeys(found))


def plan_router_bgp(topo: Topology, node_configs: Mapping[str, Any]) -> tuple[RouterBgp, ...]:
    """The BIRD setup of every router, from the topology and the nodes' loaded ``AgentConfig``s."""
    bgp_nodes = {n: c for n, c in node_configs.items() if c.bgp_enabled}
    if not bgp_nodes:
        return ()
    any_cfg = next(iter(bgp_nodes.values()))
    pods = pod_prefixes(any_cfg)
    routers = {r.name: r for r in topo.routers}
    _check_node_peers(topo, bgp_nodes, routers)
    plans = []
    for router in topo.routers:
        opts = _router_options(router)
        if router.asn is None or opts.get("enabled", True) is False:
            continue
        neighbors = _node_neighbors(topo, router, bgp_nodes) + _router_neighbors(router, routers, opts)
        router_id = _router_id(router)
        plans.append(
            RouterBgp(router.name, router.asn, router_id, neighbors, pods, bool(opts.get("multipath", True)))
        )
    return tuple(plans)


def _router_id(router: Host) -> ipaddress.IPv4Address:
    """BGP's router ID is IPv4-shaped: the router's lowest IPv4 address; an IPv6-only router gets
    one made from its name (stable, unique enough among a lab's routers)."""
    mine = [i.address.ip for i in router.interfaces if i.address is not None]
    if mine:
        return min(mine)
    return router_id_from(router.name)


def _check_node_peers(topo: Topology, bgp_nodes: Mapping[str, Any], routers: Mapping[str, Host]) -> None:
    """Every peer a node names must be a BGP router on one of its networks, with that router's ASN."""
    addr_owner = {
        (i.network, a.ip): r
        for r in routers.values()
        for i in r.interfaces
        if i.network
        for a in (i.address, i.ipv6)
        if a is not None
    }
    for node_name, cfg in bgp_nodes.items():
        node = topo.host(node_name)
        nets = {i.network for i in node.interfaces}
        for k, peer in enumerate(cfg.bgp_peers):
            where = f"nodes.{node_name}: bgp.peers[{k}]"
            router = next(
                (r for (net, ip), r in addr_owner.items() if net in nets and ip == peer.peer_address), None
            )
            if router is None:
                known = ", ".join(
                    f"{r.name} {ip}" for (net, ip), r in sorted(addr_owner.items(), key=str) if net in nets
                )
                raise RouterBgpError(
                    f"{where}.peerAddress: {peer.peer_address} is not a router on {node_name}'s networks "
                    f"(routers there: {known or 'none'}); peer with one of those"
                )
            if router.asn is None:
                raise RouterBgpError(f"{where}: router {router.name} has no asn; give it one in the topology")
            if peer.peer_asn != router.asn:
                raise RouterBgpError(
                    f"{where}.peerASN: {peer.peer_asn} is not router {router.name}'s AS {router.asn}; "
                    f"use peerASN: {router.asn}"
                )


def _node_neighbors(topo: Topology, router: Host, bgp_nodes: Mapping[str, Any]) -> tuple[BirdNeighbor, ...]:
    out = []
    for iface in router.interfaces:
        if iface.network is None:
            continue
        for family in (4, 6):
            mine = iface.address_of(family)
            for node_name, cfg in sorted(bgp_nodes.items()):
                node = topo.host(node_name)
                node_if = next((i for i in node.interfaces if i.network == iface.network), None)
                theirs = node_if.address_of(family) if node_if is not None else None
                if mine is None or theirs is None:
                    continue
                peer = next((p for p in cfg.bgp_peers if p.peer_address == mine.ip), None)
                if peer is None:
                    continue
                out.append(
                    BirdNeighbor(
                        _session_name("node", node_name, family), "node", f"node {node_name}", theirs.ip,
                        cfg.bgp_local_asn, mine.ip, passive=True, password=peer.password,
                        hold_time=peer.hold_time, keepalive_time=peer.keepalive_time,
                        ttl_security=peer.ttl_security,
                    )
                )  # fmt: skip
    return tuple(out)


def _session_name(kind: str, name: str, family: int) -> str:
    """``node_node1`` for IPv4, ``node_node1_v6`` for the IPv6 session with the same peer."""
    return f"{kind}_{name.replace('-', '_')}" + ("_v6" if family == 6 else "")


def _router_neighbors(
    router: Host, routers: Mapping[str, Host], opts: Mapping[str, Any]
) -> tuple[BirdNeighbor, ...]:
    out = []
    for iface in router.interfaces:
        other = routers.get(iface.peer or "")
        if other is None or other.asn is None or other.bgp.get("enabled", True) is False:
            continue
        back = next(i for i in other.interfaces if i.peer == router.name)
        for family in (4, 6):
            mine, theirs = iface.address_of(family), back.address_of(family)
            if mine is None or theirs is None:
                continue  # a link without IPv6 carries no IPv6 session
            out.append(
                BirdNeighbor(
                    _session_name("rtr", other.name, family), "router", f"router {other.name}", theirs.ip,
                    other.asn, mine.ip, hold_time=int(opts.get("holdTime", 9)),
                    keepalive_time=int(opts.get("keepaliveTime", 3)),
                )
            )  # fmt: skip
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# rendering (pure)


def render_bird_config(plan: RouterBgp) -> str:
    """BIRD 2's configuration for one router: a kernel protocol and a pod-CIDR filter per family
    that has pools, one ``protocol bgp`` per session with the channel of the session's family."""
    lines = [
        f"# podnet lab router {plan.router} (AS{plan.asn}); generated, do not edit",
        "log stderr all;",
        f"router id {plan.router_id};",
        "timeformat protocol iso long;",
        "timeformat route iso long;",
        "protocol device { scan time 10; }",
    ]
    for family in (4, 6):
        prefixes = ", ".join(
            f"{net}{{{low},{high}}}" for net, low, high in plan.pod_prefixes if net.version == family
        )
        if not prefixes:
            continue
        lines += [
            "protocol kernel {",
            f"  ipv{family} {{ import none; export where source = RTS_BGP; }};",
            f"  merge paths {'on' if plan.multipath else 'off'};",
            "  learn off;",
            "}",
            f"filter podnet_pod_cidrs{_suffix(family)} {{",
            f"  if net ~ [ {prefixes} ] then accept;",
            "  reject;",
            "}",
        ]
    families = {net.version for net, _, _ in plan.pod_prefixes}
    for n in plan.neighbors:
        family = n.address.version
        if family not in families:
            continue  # no pools of that family: nothing to carry
        ibgp = n.asn == plan.asn
        lines += [
            f"protocol bgp {n.name} {{",
            f'  description "{n.description}";',
            f"  local {n.local_address} as {plan.asn};",
            f"  neighbor {n.address} as {n.asn};",
            f"  hold time {n.hold_time};",
            f"  keepalive time {n.keepalive_time};",
            "  connect delay time 1;",
            "  connect retry time 2;",
            "  error wait time 1, 10;",
            "  graceful restart on;",
        ]
        if n.passive:
            lines.append("  passive on;")
        if ibgp:
            lines.append("  direct;")
        if n.password:
            lines.append(f'  password "{n.password}";')
        if n.ttl_security:
            lines.append("  ttl security on;")
        name = f"podnet_pod_cidrs{_suffix(family)}"
        channel = f"import filter {name}; export filter {name};"
        if ibgp:
            channel += " next hop self;"
        lines += [f"  ipv{family} {{ {channel} }};", "}"]
    return "\n".join(lines) + "\n"


def _suffix(family: int) -> str:
    return "" if family == 4 else "_v6"


# ---------------------------------------------------------------------------------------------
# daemons


def birdc(lab: str, router: str, *command: str, timeout: float = 5.0) -> str:
    """One ``birdc`` command against a lab router's BIRD; returns its output (header dropped)."""
    sock = control_socket(lab, router)
    try:
        res = subprocess.run(
            [BIRDC, "-s", str(sock), *command], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouterBgpError(f"router {router}: birdc {' '.join(command)} failed: {exc}") from exc
    if res.returncode != 0:
        raise RouterBgpError(
            f"router {router}: birdc {' '.join(command)} failed: {(res.stderr or res.stdout).strip()} "
            f"(is BGP running there? podnet lab up with bgp.enabled starts BIRD on routers with an asn)"
        )
    return res.stdout


def node_configs(topo: Topology) -> dict[str, Any]:
    """Each node's loaded ``AgentConfig`` as its agent will see it."""
    from podnet.config import load_config
    from podnet.lab.cluster import agent_config

    return {n.name: load_config(agent_config(topo, n), {}, None) for n in topo.nodes}


def validate_router_bgp(topo: Topology) -> None:
    """Fails (``RouterBgpError``) on a node peer that is no router, a wrong ASN, a bad router key."""
    plan_router_bgp(topo, node_configs(topo))


def ensure_router_bgp(topo: Topology, state: st.LabState) -> int:
    """Start (or reconfigure) BIRD on every BGP router; returns the number of changes."""
    changes = 0
    for plan in plan_router_bgp(topo, node_configs(topo)):
        changes += _ensure_bird(topo.name, state, plan)
    return changes


def _ensure_bird(lab: str, state: st.LabState, plan: RouterBgp) -> int:
    d = bird_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    conf = d / f"{plan.router}.conf"
    text = render_bird_config(plan)
    rec = state.process(f"bird-{plan.router}")
    running = rec is not None and rec.running()
    if running and conf.exists() and conf.read_text() == text:
        return 0
    write_private(conf, text)  # it holds BGP passwords
    if running:
        birdc(lab, plan.router, "configure", f'"{conf}"')
        return 1
    ns = st.ns_name(lab, plan.router)
    sock = control_socket(lab, plan.router)
    sock.unlink(missing_ok=True)
    argv = [BIRD, "-c", str(conf), "-s", str(sock), "-P", str(d / f"{plan.router}.pid"), "-f"]
    log = st.lab_dir(lab) / "logs" / f"bird-{plan.router}.log"
    proc = spawn(argv, ns, log)
    state.add_process(st.ProcessRecord(f"bird-{plan.router}", proc.pid, ns, argv, str(log)))
    _wait_socket(sock, proc, plan.router, log)
    return 1


def _wait_socket(sock: Path, proc: subprocess.Popen[bytes], router: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = " | ".join(_read(log).strip().splitlines()[-5:])
            raise RouterBgpError(f"BIRD on router {router} did not start: {tail} (log {log})")
        time.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def bgp_routers(topo: Topology) -> Sequence[str]:
    """The routers that run BIRD in this lab (for ``podnet bgp ... --lab``)."""
    return [p.router for p in plan_router_bgp(topo, node_configs(topo))]


def wait_bgp_converged(topo: Topology, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Wait until every BGP router's kernel table has a ``proto bird`` route for every BGP node's
    pod CIDR, so that when ``lab up`` returns native routing works end to end; name what is missing."""
    from podnet.lab.cluster import agent_request

    routers = bgp_routers(topo)
    if not routers:
        return
    wanted: set[str] = set()
    configs = node_configs(topo)
    for node in topo.nodes:
        if not configs[node.name].bgp_enabled:
            continue  # a node without BGP announces nothing: no router can learn its pod CIDR
        cidrs = agent_request(topo.name, node.name, {"op": "status"}).get("node", {}).get("podCIDRs", [])
        families = {p.peer_address.version for p in configs[node.name].bgp_peers}
        wanted.update(c for c in cidrs if ipaddress.ip_network(c).version in families)
    deadline = time.monotonic() + timeout
    missing: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        missing = {}
        for router in routers:
            have = _bird_kernel_routes(st.ns_name(topo.name, router))
            if wanted - have:
                missing[router] = wanted - have
        if not missing:
            return
        time.sleep(0.1)
    where = "; ".join(f"{r} lacks {', '.join(sorted(c))}" for r, c in sorted(missing.items()))
    raise RouterBgpError(
        f"BGP did not converge in {timeout:g}s: {where}; see `podnet bgp peers --lab {topo.name}`"
    )


def _bird_kernel_routes(ns: str) -> set[str]:
    """The prefixes BIRD installed in ``ns``, both families."""
    found: set[str] = set()
    for family in ("-4", "-6"):
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", family, "-j", "route", "show", "proto", "bird"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        found |= {r["dst"] for r in json.loads(out or "[]") if "/" in r.get("dst", "")}
    return found
