"""``podnet status | connectivity test | perf | capture | diagnose``: argument parsing and output.

Each command prints a table for people by default and a JSON document with ``-o json``. The
work happens in the sibling modules; this one parses, picks the cluster view, and formats. The
view: ``--lab L`` is the lab adapter's (``open_lab``, passed in by ``podnet.cli``); without it,
``status`` reads this host's agent when it runs one, and every command else takes the only lab
that is up. Connectivity, perf, capture and diagnose walk paths through a lab's hosts; on a real
host they say what to use instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from podnet.datapath.kernel.dropstats import KERNEL_DROPS
from podnet.verify.hostview import DEFAULT_AGENT_SOCKET, HostView
from podnet.verify.view import (
    ClusterView,
    LabOpener,
    NoAgentError,
    NoLabUpError,
    PathView,
    ViewError,
    pair_families,
    resolve_pair,
)

ON_A_REAL_HOST = {
    "connectivity test": "`podnet status` shows each peer's kernel path and a ping health",
    "perf": "run iperf3 between two hosts and between two pods",
    "capture": "run tcpdump -i IF on the host",
    "diagnose": "`ip route get DST` shows the first hop and `podnet status` each peer's path",
}


def add_parsers(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
    st = sub.add_parser("status", help="agent, routing, MTU, IPAM and every peer as the kernel has them")
    _lab_args(st)
    st.add_argument("--node", help="only this node of the lab")
    st.add_argument("--verbose", action="store_true", help="add allocated addresses and owned kernel objects")
    st.add_argument(
        "--agent-socket",
        default=None,
        help="a real host's agent socket (default /var/run/podnet/agent.sock when no --lab is given)",
    )
    st.set_defaults(func=partial(cmd_status, open_lab=open_lab))

    from podnet.verify import ipam

    ipam.add_parser(sub, partial(cmd_ipam, open_lab=open_lab))

    conn = sub.add_parser("connectivity", help="connectivity checks over the lab's datapath")
    csub = conn.add_subparsers(dest="conn_cmd", required=True)
    test = csub.add_parser("test", help="pod/node/external reachability and the full-size DF packet")
    _lab_args(test)
    test.add_argument("--deadline", type=float, default=90.0, help="seconds for the whole run (default 90)")
    test.set_defaults(func=partial(cmd_connectivity, open_lab=open_lab))

    perf = sub.add_parser("perf", help="iperf3 host-to-host vs pod-to-pod across nodes (medians, ratio)")
    _lab_args(perf)
    perf.add_argument("--repetitions", type=int, default=5, help="interleaved runs per target (default 5)")
    perf.add_argument("--seconds", type=int, default=3, help="iperf3 -t per run (default 3)")
    perf.add_argument("--plot", help="write a PNG bar chart here")
    perf.add_argument("--family", type=int, choices=(4, 6), default=4, help="measure over IPv4 or IPv6")
    perf.add_argument(
        "--parallel", type=int, default=0, metavar="N", help="also N streams at once (iperf3 -P N)"
    )
    perf.set_defaults(func=partial(cmd_perf, open_lab=open_lab))

    cap = sub.add_parser("capture", help="tcpdump on an underlay link during a pod-to-pod probe")
    _lab_args(cap)
    cap.add_argument("--on", required=True, metavar="HOST:IF", help="where to capture, e.g. r1:to-r2")
    cap.add_argument("--seconds", type=float, default=2.0, help="probe duration (default 2)")
    cap.add_argument("--from", dest="src", help="probe source (default: a pod on the first node)")
    cap.add_argument("--to", dest="dst", help="probe destination (default: a pod on the second node)")
    cap.add_argument("--family", type=int, choices=(4, 6), help="probe the pods' IPv4 or IPv6 addresses")
    cap.set_defaults(func=partial(cmd_capture, open_lab=open_lab))

    dg = sub.add_parser(
        "diagnose",
        help="walk the path SRC -> DST hop by hop, follow real probes along it, and say where it drops",
    )
    dg.add_argument("src", help="pod, node, host or address")
    dg.add_argument("dst", help="pod, node, host or address")
    _lab_args(dg)
    dg.add_argument("--size", type=int, help="packet size to check (default: the route MTU at SRC)")
    dg.add_argument(
        "--family", type=int, choices=(4, 6), help="by the IPv4 or IPv6 addresses of pods and hosts"
    )
    dg.add_argument(
        "--no-probe",
        action="store_true",
        help="only read the tables: send no probe (the verdict then cannot say the path works)",
    )
    dg.set_defaults(func=partial(cmd_diagnose, open_lab=open_lab))


def _lab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", help="lab name (default: the only lab that is up)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")


def _fail(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def _emit(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2))


def status_view(args: argparse.Namespace, open_lab: LabOpener) -> ClusterView:
    """``--agent-socket``: that host agent; ``--lab``: the lab; neither: this host's agent when
    its socket exists, else the only lab that is up."""
    if args.agent_socket is not None or (not args.lab and DEFAULT_AGENT_SOCKET.exists()):
        return HostView(Path(args.agent_socket or DEFAULT_AGENT_SOCKET))
    return open_lab(args.lab)


def path_view(args: argparse.Namespace, open_lab: LabOpener, command: str) -> PathView:
    """The lab named by ``--lab``, else the only lab that is up; with none up, the ViewError also
    says what does the job on a real host."""
    try:
        return open_lab(args.lab)
    except NoLabUpError as e:
        raise NoLabUpError(f"{e}; on a real host, {ON_A_REAL_HOST[command]}") from None


# ---- status --------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.status import cluster_status

    try:
        with status_view(args, open_lab) as view:
            out = cluster_status(view, args.node, args.verbose)
    except NoAgentError as e:
        return _fail(str(e), 1)
    except (ViewError, KeyError) as e:
        return _fail(str(e))
    if args.output == "json":
        _emit(args, out)
    else:
        print_status(out)
    ok = all(s.get("agent", {}).get("ready") for s in out["nodes"].values())
    return 0 if ok else 1


def _masquerading(masq: dict[str, Any], masq6: dict[str, Any]) -> str:
    """Cilium's ``Masquerading: nftables [eth0]``, checked against the kernel (the IPv4 half;
    an IPv6-only cluster shows only the IPv6 one)."""
    if not masq.get("enabled") and masq6.get("mode") == "nftables" and not masq.get("kernel"):
        return "Disabled for IPv4"  # IPv6-only, or IPv4 masquerading off: the IPv6 half follows
    if not masq.get("enabled"):
        return "Disabled" + ("  (but a masquerade rule is in the kernel!)" if masq.get("kernel") else "")
    if not masq.get("kernel"):
        return "enabled in config, NO RULE in the kernel (see the agent's errors)"
    return f"nftables [{masq.get('device')}], not to {', '.join(masq.get('exempt') or [])} or nodes"


def _masquerading6(masq6: dict[str, Any]) -> str:
    """The IPv6 half of the line in a dual-stack cluster (nothing in an IPv4 one)."""
    if masq6.get("mode") != "nftables":
        return ""
    return f"; IPv6 nftables, not to {', '.join(masq6.get('exempt') or [])} or nodes"


def _bgp_line(bgp: dict[str, Any] | None) -> str | None:
    if not bgp or not bgp.get("enabled"):
        return None
    sessions = ", ".join(
        f"{p.get('peerAddress')} AS{p.get('peerASN')} {p.get('state')}" for p in bgp.get("peers", [])
    )
    return f"AS{bgp.get('localASN')}, advertising {', '.join(bgp.get('advertised') or []) or '-'}; {sessions}"


def kvstore_line(kv: dict[str, Any], now: float | None = None) -> str:
    """``Ok   etcd-3.4.23 http://a:2379 (3 endpoints), last success 1s ago`` or
    ``Unreachable since 12s: <error>`` (Cilium's KVStore line, from the agent's real probe)."""
    now = time.time() if now is None else now
    if kv.get("state") == "disabled":
        return "Disabled"
    endpoints = list(kv.get("endpoints") or [])
    active = kv.get("active") or (endpoints[0] if endpoints else "?")
    where = f"{active}" + (f" ({len(endpoints)} endpoints)" if len(endpoints) > 1 else "")
    last = kv.get("lastSuccess") or 0
    ago = f"last success {now - last:.0f}s ago" if last else "never reached"
    if kv.get("state", "ok" if kv.get("connected") else "unreachable") == "ok":
        version = f"etcd-{kv['version']} " if kv.get("version") else "etcd "
        return f"Ok{' (TLS)' if kv.get('tls') else ''}   {version}{where}, {ago}"
    since = kv.get("failingSince")
    down = f" since {now - since:.0f}s" if since else ""
    return f"Unreachable{down}: {kv.get('error') or 'no answer'} ({where}, {ago})"


def kubernetes_line(k8s: dict[str, Any], now: float | None = None) -> str:
    """``Ok   1.20 (v1.20.2), last success 3s ago``, ``Disabled`` or ``Unreachable since 12s: ...``
    (Cilium's Kubernetes line)."""
    now = time.time() if now is None else now
    state = k8s.get("state", "disabled")
    if state == "disabled":
        return "Disabled"
    version = str(k8s.get("version") or "")
    short = ".".join(version.lstrip("v").split(".")[:2])
    last = k8s.get("lastSuccess") or 0
    ago = f"last success {now - last:.0f}s ago" if last else "never reached"
    if state == "ok":
        return f"Ok   {short} ({version}), {ago}"
    since = k8s.get("failingSince")
    down = f" since {now - since:.0f}s" if since else ""
    return f"Unreachable{down}: {k8s.get('error') or 'no answer'} ({ago})"


def guard_line(guard: dict[str, Any]) -> str:
    """``nftables [source verification, isolation], drops: tunnel_foreign 3, spoofed lxc1a2b 25``."""
    if not guard.get("enabled"):
        return "Disabled"
    parts = [name for name, on in (("source verification", guard.get("sourceVerification")),
                                   ("isolation", guard.get("isolation"))) if on]  # fmt: skip
    drops = [f"{k} {v}" for k, v in sorted((guard.get("drops") or {}).items()) if v]
    drops += [f"spoofed {e['hostIfname']} ({', '.join(e['addresses'])}) {e['spoofDrops']}"
              for e in guard.get("endpoints", []) if e.get("spoofDrops")]  # fmt: skip
    return f"nftables [{', '.join(parts)}], drops: {', '.join(drops) or 'none'}"


def endpoints_line(eps: dict[str, Any]) -> str:
    """``12 (2 stale: netns gone, no CNI DEL: c1/eth0 10.0.1.5/32 ...), GC every 300s, 3 reaped``."""
    stale = eps.get("stale") or []
    listed = ", ".join(f"{e['containerID']}/{e['ifname']} {' '.join(e['addresses'])}" for e in stale[:3])
    more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
    interval = float(eps.get("gcInterval") or 0)
    gc = f"GC every {interval:g}s" if interval else "GC off (endpointGCInterval 0): run CNI GC or DEL"
    head = f"{eps.get('total', 0)}" + (
        f" ({len(stale)} stale: netns gone, no CNI DEL: {listed}{more})" if stale else ""
    )
    return f"{head}, {gc}, {eps.get('reaped', 0)} reaped"


def print_status(out: dict[str, Any]) -> None:
    for name, s in out["nodes"].items():
        agent = s.get("agent", {})
        print(f"{name}{'  (lab ' + out['lab'] + ')' if out.get('lab') else ''}")
        if "error" in agent:
            print(f"  Agent:               NOT READY: {agent['error']}")
            continue
        kv = s.get("kvstore") or {}
        routing = s.get("routing") or {}
        mtu = s.get("mtu") or {}
        ipam = s.get("ipam") or {}
        masq, masq6 = s.get("masquerading") or {}, s.get("masquerading6") or {}
        tunnel = mtu.get("kernelTunnelDevice")
        rows = [
            (
                "Agent",
                f"{'ready' if agent.get('ready') else 'NOT READY'} ({agent.get('phase')}), "
                f"{agent.get('reconciles')} reconciles{_errors(agent.get('errors'))}",
            ),
            ("Kubernetes", kubernetes_line(s.get("kubernetes") or {})),
            ("KVStore", kvstore_line(kv)),
            ("Routing", f"Network: {routing.get('summary')}"),
            ("Native routing CIDR", s.get("nativeRoutingCIDR") or "-"),
            (
                "Masquerading",
                _masquerading(masq, masq6) + _masquerading6(masq6),
            ),
            ("Pod guard", guard_line(s.get("guard") or {})),
            (
                "MTU",
                f"device {mtu.get('kernelDevice', mtu.get('device'))} ({mtu.get('underlayDevice')}), "
                f"route {mtu.get('route')}" + (f", {tunnel['name']} {tunnel['mtu']}" if tunnel else ""),
            ),
            ("IPAM", ipam_line(ipam)),
            ("Host Routing", host_routing_line(s.get("hostRouting") or {})),
            ("Network policy", policy_line(s.get("policy") or {})),
            ("Drops", drops_line(s.get("drops"))),
        ]
        if s.get("endpoints"):
            rows.append(("Endpoints", endpoints_line(s["endpoints"])))
        bgp = _bgp_line(s.get("bgp"))
        if bgp:
            rows.append(("BGP", bgp))
        rows += bpf_rows(s.get("bpf") or {})
        for problem in s.get("pathMTU") or []:
            rows.append(("Path MTU", f"WARNING {problem.get('message')}"))
        rows += eni_rows(s.get("eni"))
        for key, value in rows:
            print(f"  {key + ':':<21}{value}")
        print("  Peers:")
        for p in s.get("peers", []):
            flag = "" if p["agrees"] else f"  (planned {p['plannedReach']})"
            issues = "; ".join(p.get("issues") or [])
            print(
                f"    {p['name']:<8} {p['nodeIP'] or '-':<15} {', '.join(p['podCIDRs']):<16} "
                f"{p['path']}{flag}  health {p['health']}{'  ' + issues if issues else ''}"
            )
            if p.get("why"):
                print(f"             why: {p['why']}")
            if p.get("healthDetail"):
                print(f"             health: {p['healthDetail']}")
        if "kernel" in s:
            k = s["kernel"]
            print("  Allocated:", json.dumps(ipam.get("allocations", {})))
            print("  Kernel objects podnet owns:")
            for d, info in k["devices"].items():
                print(f"    link  {d} ({info['kind']}, mtu {info['mtu']})")
            for r in k["routes"]:
                print(f"    route {r}")
            for n in k["neighbours"]:
                print(f"    neigh {n}")
            for f in k["fdb"]:
                print(f"    fdb   {f}")
            print(f"    nft   {'table ip podnet' if k['nftTable'] else '(no table podnet)'}")
        print()
    for line in supervised_lines(out.get("controlPlane") or []):
        print(line)


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


def policy_line(policy: dict[str, Any]) -> str:
    """``3 policies, 4 pods isolated (in 3, out 1), 12 entries`` (Cilium's ``Policy`` line)."""
    if not policy.get("enabled"):
        return "Disabled"
    if policy.get("error"):
        return f"ERROR: {policy['error']}"
    text = (
        f"{policy.get('policies', 0)} policies ({policy.get('source') or 'kubernetes'}), "
        f"in {policy.get('isolatedIngress', 0)} / out "
        f"{policy.get('isolatedEgress', 0)} pod addresses isolated, {policy.get('entries', 0)} entries"
    )
    refused = policy.get("invalid") or []
    return text + (f"; REFUSED {len(refused)}: {refused[0]}" if refused else "")


def drops_line(drops: dict[str, Any] | None) -> str:
    """The node's drops by reason: podnet's (one event each, ``podnet drops``), the kernel's own
    counters of the namespace, and pod veths that dropped packets."""
    if not drops:
        return "unknown (an agent from before the drop monitor)"
    events = "on" if drops.get("events") else "off (bpf.events.drop.enabled=false)"
    guard = ", ".join(f"{k} {v}" for k, v in sorted((drops.get("byReason") or {}).items())) or "none"
    counted = drops.get("kernel") or {}
    recent = drops.get("kernelRecent")
    text = f"podnet {guard} (events {events}; `podnet drops` lists them)"
    if recent is None:  # an agent from before the window
        kernel = ", ".join(f"{k} {v} ({KERNEL_DROPS.get(k, '?')})" for k, v in sorted(counted.items()))
        text += f"; kernel {kernel or 'none'}"
    else:
        minutes = round(float(drops.get("recentWindow") or 300) / 60)
        rising = ", ".join(f"{k} +{n} ({KERNEL_DROPS.get(k, '?')})" for k, n in sorted(recent.items()))
        earlier = ", ".join(f"{k} {v}" for k, v in sorted(counted.items()) if k not in recent)
        text += f"; kernel, last {minutes} min: {rising or 'none'}"
        if earlier:
            text += f" (earlier, not rising: {earlier})"
    veths = ", ".join(f"{k} {v}" for k, v in sorted((drops.get("endpoints") or {}).items()))
    if veths:
        text += f"; pod veths dropped {veths}"
    if drops.get("error"):
        text += f"  ERROR {drops['error']}"
    return text


def host_routing_line(hr: dict[str, Any]) -> str:
    """Cilium's ``Host Routing: Legacy`` or ``BPF``, with the program and what it did."""
    if hr.get("mode") != "BPF":
        return f"Legacy ({hr['fallback']})" if hr.get("fallback") else "Legacy"
    errors = "; ".join(hr.get("errors") or [])
    program = hr.get("program")
    if not program:
        return f"BPF, but NO program attached ({errors or 'the next round attaches it'})"
    counters = ", ".join(f"{k} {v}" for k, v in (hr.get("counters") or {}).items())
    text = (
        f"BPF ({program['object']} id {program['id']} on {len(hr.get('devices') or [])} pod veths"
        + "".join(f" and {d}" for d in hr.get("underlayDevices") or [])
        + "; "
        f"endpoints {hr.get('endpoints')}, learnt MACs {hr.get('learntMACs')}, cluster CIDRs "
        f"{hr.get('clusterCIDRs')}, tunnel peers {hr.get('tunnelPeers', 0)}; {counters})"
    )
    for decap in hr.get("decap") or []:
        decap_counters = ", ".join(f"{k} {v}" for k, v in decap["counters"].items())
        text += (
            f"; {decap.get('protocol', 'tunnel')} decap {decap['program']['object']} "
            f"id {decap['program']['id']} on {decap['dev']} ingress "
            f"(peers {decap['allowed']}; {decap_counters})"
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


def eni_rows(eni: dict[str, Any] | None) -> list[tuple[str, str]]:
    """ENI mode: the instance and its limits, one row per ENI, the operator's last EC2 calls and
    errors (what ``cilium status`` and CiliumNode status.eni show)."""
    if not eni:
        return []
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
    return rows


def ipam_line(ipam: dict[str, Any]) -> str:
    """Cilium's ``IPv4: 5/254 allocated from 10.244.1.0/24``, per family; with several pools
    (multi-pool), each pool's share and what stops it growing. Counts too long to read are
    shortened (an IPv6 /64: ``1/2^64-2``); ``-o json`` keeps them exact."""
    from podnet.verify.ipam import format_use

    pools = ipam.get("pools")
    if pools is None:  # an agent from before pools were reported
        return (
            f"{ipam.get('mode')} {', '.join(ipam.get('podCIDRs') or [])}, "
            f"{ipam.get('used')}/{ipam.get('total')} allocated"
        )
    parts = []
    for family in sorted({p["family"] for p in pools}):
        mine = [p for p in pools if p["family"] == family]
        use = format_use(sum(p["used"] for p in mine), sum(p["capacity"] for p in mine))
        if len(mine) == 1 and mine[0]["pool"] in ("default", "crd"):
            crd = mine[0]["pool"] == "crd"
            cidrs = ", ".join(mine[0]["cidrs"]) or ("the node's address pool" if crd else "-")
            text = f"IPv{family}: {use} allocated from {cidrs}"
            if mine[0].get("error"):
                text += f" ({mine[0]['error']})"
        else:
            each = "; ".join(_pool_text(p) for p in mine)
            text = f"IPv{family}: {use} allocated from {len(mine)} IPAM pool(s): {each}"
        parts.append(text)
    return f"{', '.join(parts) or 'no address yet'} [{ipam.get('mode')}]"


def _pool_text(p: dict[str, Any]) -> str:
    from podnet.verify.ipam import format_capacity, format_use

    cidrs = ", ".join(p["cidrs"]) or "no CIDR yet"
    text = f"{p['pool']} {format_use(p['used'], p['capacity'])} from {cidrs}"
    if p.get("needed") is not None:
        text += f", needs {format_capacity(p['needed'])}"
    return text + (f" (ERROR {p['error']})" if p.get("error") else "")


def _errors(errors: Any) -> str:
    return f", errors: {'; '.join(errors)}" if errors else ""


# ---- connectivity --------------------------------------------------------------------------------


def cmd_connectivity(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.connectivity import CheckResult, run_checks

    def show(r: CheckResult) -> None:
        if args.output == "table":
            mark = {"pass": "ok  ", "fail": "FAIL", "skipped": "skip"}[r.status]
            size = f" [{r.spec.size} B, DF]" if r.spec.size else ""
            print(f"[{mark}] {r.spec.name:<24} {r.spec.src.describe()} -> {r.spec.dst.describe()}{size}")
            if r.status == "fail":
                print(f"         {r.detail}")
                if r.drop is not None and r.drop.fix:
                    print(f"         fix: {r.drop.fix}")

    try:
        with path_view(args, open_lab, "connectivity test") as view:
            report = run_checks(view, args.deadline, on_result=show)
    except ViewError as e:
        return _fail(str(e))
    doc = report.to_json()
    if args.output == "json":
        _emit(args, doc)
    else:
        print(f"\n{doc['passed']} passed, {doc['failed']} failed, {doc['skipped']} skipped")
    return 0 if report.ok else 1


# ---- perf ----------------------------------------------------------------------------------------


def cmd_perf(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.perf import PerfError, lab_targets, measure, options_for, plot

    progress = (lambda m: print(f"  - {m}", file=sys.stderr)) if args.output == "table" else (lambda _m: None)
    try:
        with path_view(args, open_lab, "perf") as view:
            opts = options_for(args.parallel)
            report = measure(lab_targets(view, args.family), args.repetitions, args.seconds, progress, opts)
            title = f"lab {view.name}: iperf3 medians of {args.repetitions} runs"
    except (ViewError, PerfError) as e:
        return _fail(str(e), 1)
    doc = report.to_json()
    if args.plot:
        doc["plot"] = str(plot(report, Path(args.plot), title))
    if args.output == "json":
        _emit(args, doc)
    else:
        print_perf_table(doc)
        if args.plot:
            print(f"\nplot: {doc['plot']}")
    return 0


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


# ---- capture -------------------------------------------------------------------------------------


def cmd_capture(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.capture import capture, default_pair

    host, sep, iface = args.on.partition(":")
    if not sep or not host or not iface:
        return _fail(f"--on {args.on!r}: expected HOST:IF, e.g. r1:to-r2")
    try:
        with path_view(args, open_lab, "capture") as view:
            src, dst = default_pair(view, args.family)
            if args.src or args.dst:  # a given address decides the family, unless --family does
                src_t, dst_t = args.src or src.name, args.dst or dst.name
                src, dst = resolve_pair(view, src_t, dst_t, args.family)
            result = capture(view, host, iface, args.seconds, src, dst)
    except ViewError as e:
        return _fail(str(e))
    if args.output == "json":
        _emit(args, result.to_json())
    else:
        print(
            f"on {host}:{iface}, {src.describe()} -> {dst.describe()}: {result.sentence} "
            f"({result.packets} packets captured)"
        )
    return 0 if result.kind != "none" else 1


# ---- diagnose ------------------------------------------------------------------------------------


def cmd_ipam(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.ipam import run_ipam

    try:
        return run_ipam(args, status_view(args, open_lab))
    except ViewError as e:
        return _fail(str(e))


def cmd_diagnose(args: argparse.Namespace, open_lab: LabOpener) -> int:
    from podnet.verify.diagnose import Diagnoser, families_json

    try:
        with path_view(args, open_lab, "diagnose") as view:
            unstarted = _never_started(view, args.src, args.dst)
            if unstarted is not None:
                return _print_unstarted(args, *unstarted)
            diagnoser = Diagnoser(view)
            diags = [
                diagnoser.diagnose(*resolve_pair(view, args.src, args.dst, family), args.size,
                                   probe=not args.no_probe)
                for family in pair_families(view, args.src, args.dst, args.family)
            ]  # fmt: skip
    except ViewError as e:
        return _fail(str(e))
    doc = families_json(diags)
    if args.output == "json":
        _emit(args, doc)
    elif len(diags) == 1:
        print_diagnosis(doc)
    else:
        for family in doc["families"]:
            print(f"IPv{family['family']}:")
            print_diagnosis(family)
            print()
        statuses = ", ".join(f"IPv{f['family']} {f['status']}" for f in doc["families"])
        print(f"both families: {statuses}")
    return 0 if doc["ok"] else 1


def _never_started(view: PathView, *targets: str) -> tuple[str, str, dict[str, Any]] | None:
    """A target that is no pod the cluster knows but whose CNI ADD failed: (pod, node, failure)."""
    from podnet.verify.ipam import failed_start

    for target in targets:
        if target in view.pods:
            continue
        try:
            view.resolve(target)
            continue
        except ViewError:
            pass
        found = failed_start(view, target)
        if found is not None:
            return target, found[0], found[1]
    return None


def _print_unstarted(args: argparse.Namespace, pod: str, node: str, failure: dict[str, Any]) -> int:
    """``diagnose`` for a pod that never got an address: the node, the CNI error (which names the
    pool or the node's address pool), and what to do."""
    details = str(failure.get("details") or "")
    fix = (
        "give the pool more CIDRs (or the node more addresses), or delete pods that hold them; "
        "`podnet ipam` shows each pool's use per node"
        if failure.get("code") == 100
        else "see the agent's log on that node"
    )
    doc = {
        "src": args.src,
        "dst": args.dst,
        "verdict": {
            "host": node,
            "reason": f"pod {pod} never started: CNI ADD failed on node {node} with code "
            f"{failure.get('code')} ({failure.get('msg')}): {details}",
            "fix": fix,
        },
    }
    if args.output == "json":
        _emit(args, doc)
    else:
        print(f"verdict: {doc['verdict']['reason']}")
        print(f"fix: {fix}")
    return 1


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
