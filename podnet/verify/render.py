"""How ``podnet status``, ``perf`` and ``diagnose`` print for people (``-o json`` prints the
documents themselves): one function per line or section, from the documents alone."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from podnet.datapath.kernel.dropstats import KERNEL_DROPS
from podnet.statusdoc.bgp import BgpStatus
from podnet.statusdoc.datastore import DISABLED, StoreHealth
from podnet.statusdoc.document import StatusDocument
from podnet.statusdoc.drops import DropCounters
from podnet.statusdoc.endpoints import EndpointsStatus
from podnet.statusdoc.guard import GuardStatus
from podnet.statusdoc.hostrouting import HostRoutingStatus
from podnet.statusdoc.ipam import IpamStatus, PoolUse
from podnet.statusdoc.masquerade import NFTABLES, Masquerade6Status, MasqueradeStatus
from podnet.statusdoc.policy import PolicyStatus
from podnet.statusdoc.routing import MtuStatus
from podnet.verify.nodereport import ClusterReport, KernelObjects, NodeReport


def _masquerading(masq: MasqueradeStatus, in_kernel: bool) -> str:
    """Cilium's ``Masquerading: nftables [eth0]``, checked against the kernel (the IPv4 half;
    an IPv6-only cluster shows only the IPv6 one)."""
    if not masq.enabled and masq.ipv6.mode == NFTABLES and not in_kernel:
        return "Disabled for IPv4"  # IPv6-only, or IPv4 masquerading off: the IPv6 half follows
    if not masq.enabled:
        return "Disabled" + ("  (but a masquerade rule is in the kernel!)" if in_kernel else "")
    if not in_kernel:
        return "enabled in config, NO RULE in the kernel (see the agent's errors)"
    return f"nftables [{masq.device}], not to {', '.join(masq.exempt)} or nodes"


def _masquerading6(masq6: Masquerade6Status) -> str:
    """The IPv6 half of the line in a dual-stack cluster (nothing in an IPv4 one)."""
    if masq6.mode != NFTABLES:
        return ""
    return f"; IPv6 nftables, not to {', '.join(masq6.exempt)} or nodes"


def _bgp_line(bgp: BgpStatus) -> str | None:
    if not bgp.enabled:
        return None
    sessions = ", ".join(f"{p.peer_address} AS{p.peer_asn} {p.state}" for p in bgp.peers)
    return f"AS{bgp.local_asn}, advertising {', '.join(bgp.advertised) or '-'}; {sessions}"


def kvstore_line(kv: StoreHealth, now: float | None = None) -> str:
    """``Ok   etcd-3.4.23 http://a:2379 (3 endpoints), last success 1s ago`` or
    ``Unreachable since 12s: <error>`` (Cilium's KVStore line, from the agent's real probe)."""
    now = time.time() if now is None else now
    if kv.kind == DISABLED:
        return "Disabled"
    active = kv.active or (kv.endpoints[0] if kv.endpoints else "?")
    where = f"{active}" + (f" ({len(kv.endpoints)} endpoints)" if len(kv.endpoints) > 1 else "")
    ago = f"last success {now - kv.last_success:.0f}s ago" if kv.last_success else "never reached"
    if kv.ok:
        version = f"etcd-{kv.version} " if kv.version else "etcd "
        return f"Ok{' (TLS)' if kv.tls else ''}   {version}{where}, {ago}"
    down = f" since {now - kv.failing_since:.0f}s" if kv.failing_since else ""
    return f"Unreachable{down}: {kv.error or 'no answer'} ({where}, {ago})"


def kubernetes_line(k8s: StoreHealth, now: float | None = None) -> str:
    """``Ok   1.20 (v1.20.2), last success 3s ago``, ``Disabled`` or ``Unreachable since 12s: ...``
    (Cilium's Kubernetes line)."""
    now = time.time() if now is None else now
    if k8s.kind == DISABLED:
        return "Disabled"
    version = k8s.version or ""
    short = ".".join(version.lstrip("v").split(".")[:2])
    ago = f"last success {now - k8s.last_success:.0f}s ago" if k8s.last_success else "never reached"
    if k8s.ok:
        return f"Ok   {short} ({version}), {ago}"
    down = f" since {now - k8s.failing_since:.0f}s" if k8s.failing_since else ""
    return f"Unreachable{down}: {k8s.error or 'no answer'} ({ago})"


def guard_line(guard: GuardStatus | Mapping[str, Any]) -> str:
    """``nftables [source verification, isolation], drops: tunnel_foreign 3, spoofed lxc1a2b 25``
    (from the ``guard`` section, or its JSON)."""
    if not isinstance(guard, GuardStatus):
        guard = GuardStatus.from_json(guard)
    if not guard.enabled:
        return "Disabled"
    parts = [name for name, on in (("source verification", guard.source_verification),
                                   ("isolation", guard.isolation)) if on]  # fmt: skip
    drops = [f"{k} {v}" for k, v in sorted(guard.drops.items()) if v]
    drops += [f"spoofed {e.host_ifname} ({', '.join(e.addresses)}) {e.spoof_drops}"
              for e in guard.endpoints if e.spoof_drops]  # fmt: skip
    return f"nftables [{', '.join(parts)}], drops: {', '.join(drops) or 'none'}"


def endpoints_line(eps: EndpointsStatus) -> str:
    """``12 (2 stale: netns gone, no CNI DEL: c1/eth0 10.0.1.5/32 ...), GC every 300s, 3 reaped``."""
    stale = eps.stale
    listed = ", ".join(f"{e.container_id}/{e.ifname} {' '.join(e.addresses)}" for e in stale[:3])
    more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
    interval = eps.gc_interval
    gc = f"GC every {interval:g}s" if interval else "GC off (endpointGCInterval 0): run CNI GC or DEL"
    head = f"{eps.total}" + (
        f" ({len(stale)} stale: netns gone, no CNI DEL: {listed}{more})" if stale else ""
    )
    return f"{head}, {gc}, {eps.reaped} reaped"


def _mtu_line(node: NodeReport) -> str:
    mtu = node.agent.mtu or MtuStatus()
    device = node.kernel_device_mtu if node.kernel_device_mtu is not None else mtu.device
    tunnel = node.tunnel_device
    return f"device {device} ({mtu.underlay_device}), route {mtu.route}" + (
        f", {tunnel.name} {tunnel.mtu}" if tunnel else ""
    )


def _big_tcp_rows(doc: StatusDocument) -> list[tuple[str, str]]:
    """Cilium's ``IPv4 BIG TCP`` / ``IPv6 BIG TCP`` rows, one per family the cluster runs."""
    mtu = doc.mtu or MtuStatus()
    families = doc.routing.families or ("IPv4",)
    return [
        (f"{family} BIG TCP", big.line())
        for family, big in (("IPv4", mtu.big_tcp_ipv4), ("IPv6", mtu.big_tcp_ipv6))
        if family in families
    ]


def status_rows(node: NodeReport) -> list[tuple[str, str]]:
    """The rows of one node that answered, label and text (pure)."""
    doc = node.agent
    rows = [
        (
            "Agent",
            f"{'ready' if doc.ready else 'NOT READY'} ({doc.phase}), "
            f"{doc.reconciles} reconciles{_errors(doc.errors)}",
        ),
        ("Kubernetes", kubernetes_line(doc.kubernetes)),
        ("KVStore", kvstore_line(doc.kvstore)),
        ("Routing", f"Network: {node.routing_summary}"),
        ("Native routing CIDR", ", ".join(doc.routing.native_routing_cidrs) or "-"),
        (
            "Masquerading",
            _masquerading(doc.masquerade, node.masquerade_in_kernel) + _masquerading6(doc.masquerade.ipv6),
        ),
        ("Pod guard", guard_line(doc.guard)),
        ("MTU", _mtu_line(node)),
        *_big_tcp_rows(doc),
        ("IPAM", ipam_line(doc.ipam or IpamStatus())),
        ("Host Routing", host_routing_line(doc.host_routing)),
        ("Network policy", policy_line(doc.policy)),
        ("Drops", drops_line(doc.drops)),
    ]
    if doc.endpoints.reported:
        rows.append(("Endpoints", endpoints_line(doc.endpoints)))
    bgp = _bgp_line(doc.bgp)
    if bgp:
        rows.append(("BGP", bgp))
    rows += bpf_rows(node.bpf)
    for problem in doc.path_mtu.failing():
        rows.append(("Path MTU", f"WARNING {problem.message}"))
    if doc.mode_section is not None:  # the IPAM mode's own rows, as it wrote them
        rows += doc.mode_section.rows
    return rows


def print_status(report: ClusterReport) -> None:
    for name, node in report.nodes.items():
        doc = node.agent
        print(f"{name}{'  (lab ' + report.lab + ')' if report.lab else ''}")
        if doc.unanswered:
            print(f"  Agent:               NOT READY: {doc.unanswered}")
            continue
        for key, value in status_rows(node):
            print(f"  {key + ':':<21}{value}")
        print("  Peers:")
        for p in node.peers:
            flag = "" if p.agrees else f"  (planned {p.planned_reach})"
            issues = "; ".join(p.issues)
            print(
                f"    {p.name:<8} {p.node_ip or '-':<15} {', '.join(p.pod_cidrs):<16} "
                f"{p.path}{flag}  health {p.health}{'  ' + issues if issues else ''}"
            )
            if p.why:
                print(f"             why: {p.why}")
            if p.health_detail:
                print(f"             health: {p.health_detail}")
        if node.kernel is not None:
            _print_kernel(node.kernel, doc.ipam)
        print()
    for line in supervised_lines(list(report.control_plane)):
        print(line)


def _print_kernel(k: KernelObjects, ipam: IpamStatus | None) -> None:
    allocations = {owner: list(a) for owner, a in ipam.allocations.items()} if ipam else {}
    print("  Allocated:", json.dumps(allocations))
    print("  Kernel objects podnet owns:")
    for d in k.devices:
        print(f"    link  {d.name} ({d.kind}, mtu {d.mtu})")
    for r in k.routes:
        print(f"    route {r}")
    for n in k.neighbours:
        print(f"    neigh {n}")
    for f in k.fdb:
        print(f"    fdb   {f}")
    print(f"    nft   {'table ip podnet' if k.nft_table else '(no table podnet)'}")


def supervised_lines(procs: list[dict[str, Any]]) -> list[str]:
    """The lab's control plane: each process running, or DOWN with what restarts it (pure)."""
    if not procs:
        return []
    down = [p for p in procs if not p.get("running")]
    head = f"Control plane (lab): {len(procs) - len(down)}/{len(procs)} running"
    lines = [head]
    for p in procs:
        if p.get("running"):
            lines.append(f"  {p['name']:<24} running (pid {p['pid']})")
        else:
            log = f", log {p['log']}" if p.get("log") else ""
            lines.append(f"  {p['name']:<24} DOWN (was pid {p['pid']}{log}): `{p['restart']}` restarts it")
    return lines


def policy_line(policy: PolicyStatus) -> str:
    """``3 policies, 4 pods isolated (in 3, out 1), 12 entries`` (Cilium's ``Policy`` line)."""
    if not policy.enabled:
        return "Disabled"
    if policy.error:
        return f"ERROR: {policy.error}"
    text = (
        f"{policy.policies} policies ({policy.source or 'kubernetes'}), in {policy.isolated_ingress} / out "
        f"{policy.isolated_egress} pod addresses isolated, {policy.entries} entries"
    )
    refused = policy.invalid
    return text + (f"; REFUSED {len(refused)}: {refused[0]}" if refused else "")


def drops_line(drops: DropCounters | None) -> str:
    """The node's drops by reason: podnet's (one event each, ``podnet drops``), the kernel's own
    counters of the namespace, and pod veths that dropped packets."""
    if drops is None:
        return "unknown (an agent from before the drop monitor)"
    events = "on" if drops.events else "off (bpf.events.drop.enabled=false)"
    guard = ", ".join(f"{k} {v}" for k, v in sorted(drops.by_reason.items())) or "none"
    counted, recent = drops.kernel, drops.kernel_recent
    text = f"podnet {guard} (events {events}; `podnet drops` lists them)"
    if recent is None:  # an agent from before the window
        kernel = ", ".join(f"{k} {v} ({KERNEL_DROPS.get(k, '?')})" for k, v in sorted(counted.items()))
        text += f"; kernel {kernel or 'none'}"
    else:
        minutes = round(drops.recent_window / 60)
        rising = ", ".join(f"{k} +{n} ({KERNEL_DROPS.get(k, '?')})" for k, n in sorted(recent.items()))
        earlier = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()) if k not in recent)
        text += f"; kernel, last {minutes} min: {rising or 'none'}"
        if earlier:
            text += f" (earlier, not rising: {earlier})"
    veths = ", ".join(f"{k} {v}" for k, v in sorted(drops.endpoints.items()))
    if veths:
        text += f"; pod veths dropped {veths}"
    if drops.error:
        text += f"  ERROR {drops.error}"
    return text


def host_routing_line(hr: HostRoutingStatus | Mapping[str, Any]) -> str:
    """Cilium's ``Host Routing: Legacy`` or ``BPF``, with the program and what it did (from the
    ``hostRouting`` section, or its JSON)."""
    if not isinstance(hr, HostRoutingStatus):
        hr = HostRoutingStatus.from_json(hr)
    if not hr.bpf:
        return f"Legacy ({hr.fallback})" if hr.fallback else "Legacy"
    errors = "; ".join(hr.errors or ())
    stats = hr.stats
    if stats is None or stats.program is None:
        return f"BPF, but NO program attached ({errors or 'the next round attaches it'})"
    program = stats.program
    counters = ", ".join(f"{k} {v}" for k, v in stats.counters.items())
    text = (
        f"BPF ({program.object} id {program.id} on {len(stats.devices)} pod veths"
        + "".join(f" and {d}" for d in stats.underlay_devices)
        + "; "
        f"endpoints {stats.endpoints}, learnt MACs {stats.learnt_macs}, cluster CIDRs "
        f"{stats.cluster_cidrs}, tunnel peers {stats.tunnel_peers}; {counters})"
    )
    for decap in stats.decap:
        decap_counters = ", ".join(f"{k} {v}" for k, v in decap.counters.items())
        text += (
            f"; {decap.protocol} decap {decap.program.object} "
            f"id {decap.program.id} on {decap.dev} ingress "
            f"(peers {decap.allowed}; {decap_counters})"
        )
    return text + (f"  ERRORS {errors}" if errors else "")


def bpf_rows(bpf: dict[str, Any]) -> list[tuple[str, str]]:
    """The tunnel protocol's eBPF programs (when it has any): where each is attached, map fill and
    counters."""
    if not bpf:
        return []
    programs = ", ".join(
        f"{p['object'].split(':')[0]} (id {p['id']}) on {p['dev']} {p['hook']}"
        for p in bpf.get("programs", [])
    )
    rows = [("BPF programs", programs or "NONE attached (the agent's node setup attaches them)")]
    if bpf.get("error"):
        rows.append(("BPF maps", f"ERROR {bpf['error']}"))
    else:
        counters = ", ".join(f"{k} {v}" for k, v in (bpf.get("counters") or {}).items())
        rows.append(
            ("BPF maps", f"peers {bpf.get('peers')}, allowed sources {bpf.get('allowed')}; {counters}")
        )
    return rows


def ipam_line(ipam: IpamStatus | Mapping[str, Any]) -> str:
    """Cilium's ``IPv4: 5/254 allocated from 10.244.1.0/24``, per family; with several pools
    (modes with named pools), each pool's share and what stops it growing. Counts too long to read are
    shortened (an IPv6 /64: ``1/2^64-2``); ``-o json`` keeps them exact. From the ``ipam``
    section, or its JSON."""
    from podnet.verify.ipam import format_use

    if not isinstance(ipam, IpamStatus):
        ipam = IpamStatus.from_json(ipam) or IpamStatus()
    pools = ipam.pools
    if pools is None:  # an agent from before pools were reported
        return f"{ipam.mode} {', '.join(ipam.pod_cidrs)}, {ipam.used}/{ipam.total} allocated"
    parts = []
    for family in sorted({p.family for p in pools}):
        mine = [p for p in pools if p.family == family]
        use = format_use(sum(p.used for p in mine), sum(p.capacity for p in mine))
        if len(mine) == 1 and mine[0].pool in ("default", "crd"):
            crd = mine[0].pool == "crd"
            cidrs = ", ".join(mine[0].cidrs) or ("the node's address pool" if crd else "-")
            text = f"IPv{family}: {use} allocated from {cidrs}"
            if mine[0].error:
                text += f" ({mine[0].error})"
        else:
            each = "; ".join(_pool_text(p) for p in mine)
            text = f"IPv{family}: {use} allocated from {len(mine)} IPAM pool(s): {each}"
        parts.append(text)
    return f"{', '.join(parts) or 'no address yet'} [{ipam.mode}]"


def _pool_text(p: PoolUse) -> str:
    from podnet.verify.ipam import format_capacity, format_use

    cidrs = ", ".join(p.cidrs) or "no CIDR yet"
    text = f"{p.pool} {format_use(p.used, p.capacity)} from {cidrs}"
    if p.needed is not None:
        text += f", needs {format_capacity(p.needed)}"
    return text + (f" (ERROR {p.error})" if p.error else "")


def _errors(errors: Sequence[str]) -> str:
    return f", errors: {'; '.join(errors)}" if errors else ""


# ---- connectivity --------------------------------------------------------------------------------


def print_perf_table(doc: dict[str, Any]) -> None:
    """Per metric: each target's median, and its ratio to the host with the spread of the
    per-repetition ratios (flagged when too wide to conclude)."""
    print(f"{'PATH':<40} {'METRIC':<18} {'MEDIAN':>16} {'VS HOST':>8}  SPREAD")
    wide = False
    for r in doc.get("metrics") or []:
        unit = "tx/s" if r["unit"] == "transactions/s" else "Gbit/s"
        median = f"{r['median']:.0f} {unit}" if unit == "tx/s" else f"{r['median']:.2f} {unit}"
        if "ratio" in r:
            low, high = r["spread"]
            flag = "  TOO WIDE to conclude" if r["wide"] else ""
            wide = wide or r["wide"]
            ratio = f"{r['ratio']:>8.3f}  {low:.3f}-{high:.3f}{flag}"
            print(f"{r['label']:<40} {r['metric']:<18} {median:>16} {ratio}")
        else:
            print(f"{r['label']:<40} {r['metric']:<18} {median:>16} {'1':>8}")
    print(f"\nmethod: {doc.get('method')}")
    if wide:
        print("a spread is wider than the difference it should show: run again with more --repetitions")


def print_diagnosis(doc: dict[str, Any]) -> None:
    src, dst = doc["src"], doc["dst"]
    print(f"{src['host']} ({src['ip']}) -> {dst['host']} ({dst['ip']}), full-size packet {doc['size']} bytes")
    for label, walk in (("forward", doc["forward"]), ("reply", doc["reply"])):
        if walk is None:
            continue
        print(f"  {label}:")
        for h in walk["hops"]:
            print(f"    {h['host']:<8} {h['action']:<8} {h['kernel']}")
    print_probe(doc.get("probe"), doc.get("probeNote") or "")
    for warning in doc.get("warnings") or []:
        print(f"warning: {warning}")
    verdict = doc["verdict"]
    if verdict is None and doc.get("status") == "unverified":
        print("verdict: unverified: the tables look right on every hop both ways, but no probe was followed")
    elif verdict is None:
        probe = doc.get("probe") or {}
        extra = {"tcp": "a TCP connection (64 KiB each way)", "udp": "a full-size UDP echo"}
        done = [text for name, text in extra.items() if (probe.get(name) or {}).get("ok")]
        also = "".join(f" and {text}" for text in done)
        print(
            f"verdict: works: the probes (small and full-size, DF){also} went and came back along this path"
        )
    elif verdict.get("kind") == "fragmented":
        print(f"verdict: works, but degraded at {verdict['host']}: {verdict['reason']}")
        print(f"fix: {verdict['fix']}")
    elif verdict.get("kind") == "inconclusive":
        print(f"verdict: {verdict['reason']}")
        print(f"next: {verdict['fix']}")
    else:
        print(f"verdict: dropped at {verdict['host']}: {verdict['reason']}")
        print(f"fix: {verdict['fix']}")


def print_probe(probe: dict[str, Any] | None, note: str) -> None:
    """Where the followed probes were seen, per probe, in the order of the path, and what rose."""
    if probe is None:
        if note:
            print(f"  probes: {note}")
        return
    answered = probe["answered"]
    print(
        f"  probes (ICMP echo, DF; small and {probe['size']} bytes): answered small "
        f"{'yes' if answered['small'] else 'NO'}, full-size {'yes' if answered['fullSize'] else 'NO'}"
    )
    for kind in ("request small", "request full-size", "reply small", "reply full-size"):
        seen = [s for s in probe["seen"] if s["probe"] == kind]  # in the order they were seen
        trail = ", ".join(
            f"{s['host']} {s['iface']} {s['direction']}" + (" [tunnel]" if s["encapsulated"] else "")
            for s in seen
        )
        print(f"    {kind:<18} {trail or '(not seen anywhere)'}")
    for name in ("tcp", "udp"):
        res = probe.get(name)
        if res is not None:
            state = "ok" if res["ok"] else "FAILED"
            print(f"    {name.upper()} to port {res['port']:<8} {state}: {res['detail']}")
    for host, counters in (probe.get("counters") or {}).items():
        parts = [f"nft {r}" for r in counters["nft"]]
        parts += [f"{k} +{n}" for k, n in counters["kernel"].items()]
        parts += [f"{k} dropped +{n}" for k, n in counters["links"].items()]
        parts += [f"{k} dropped +{n}" for k, n in (counters.get("qdiscs") or {}).items()]
        print(f"    meanwhile on {host}: {'; '.join(parts)}")
