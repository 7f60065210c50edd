"""``podnet lab diagram``: a Graphviz picture of a running lab, drawn from its live state.

Segments, routers, nodes (with their pods and pod CIDRs) and the external host come from the
lab's namespaces (device MTUs and addresses as the kernel has them); for every pair of nodes a
dashed edge says how their pods reach each other, as the kernel answers ``ip route get``: through
the tunnel, direct route, routed by the underlay, or unreachable. ``to_dot`` is pure; ``render``
runs ``dot``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from podnet.lab.view import LabView

NL = "\\n"  # a line break inside a Graphviz label
REACH_STYLE = {
    "tunnel": ("#1f77b4", "tunnel"),
    "direct-route": ("#2ca02c", "direct route"),
    "underlay-router": ("#ff7f0e", "routed by the underlay"),
    "unreachable": ("#d62728", "unreachable"),
}


@dataclass(frozen=True)
class Picture:
    """What the diagram shows, gathered from the live lab (plain data, so ``to_dot`` is pure)."""

    lab: str
    mode: str
    segments: tuple[tuple[str, str, int], ...]  # (name, cidr, bridge MTU)
    hosts: tuple[tuple[str, str, str], ...]  # (name, role, label)
    attachments: tuple[tuple[str, str, str], ...]  # (host, segment, "eth0 172.16.2.2 mtu 1500")
    links: tuple[tuple[str, str, str], ...]  # (router, router, label)
    pods: tuple[tuple[str, str, str], ...]  # (pod, node, ip)
    reach: tuple[tuple[str, str, str, str], ...]  # (node a, node b, reach kind, text)


def _q(text: str) -> str:
    return '"' + text.replace('"', r"\"") + '"'


def to_dot(p: Picture) -> str:
    """The Graphviz source of the picture."""
    out = [
        f"graph {_q(p.lab)} {{",
        "  graph [rankdir=TB, fontname=Helvetica, fontsize=11, "
        f"label={_q(f'lab {p.lab} - {p.mode}')}, labelloc=t];",
        "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];",
    ]
    for name, cidr, mtu in p.segments:
        label = _q(NL.join([f"segment {name}", cidr, f"mtu {mtu}"]))
        out.append(
            f'  {_q("seg:" + name)} [shape=box, style="rounded,filled", fillcolor="#eeeeee", label={label}];'
        )
    for name, role, label in p.hosts:
        if role == "node":
            out.append(f'  subgraph {_q("cluster_" + name)} {{ style=rounded; color="#555555"; label="";')
            out.append(f"    {_q(name)} [shape=box3d, label={_q(label)}];")
            for pod, node, ip in p.pods:
                if node == name:
                    label = _q(pod + NL + ip)
                    out.append(
                        f'    {_q(pod)} [shape=ellipse, style=filled, fillcolor="#dbe9f6", label={label}];'
                    )
                    out.append(f'    {_q(name)} -- {_q(pod)} [color="#999999"];')
            out.append("  }")
        else:
            shape = {"router": "diamond", "external": "house", "controlplane": "cylinder"}.get(role, "box")
            out.append(f"  {_q(name)} [shape={shape}, label={_q(label)}];")
    for host, seg, label in p.attachments:
        out.append(f"  {_q(host)} -- {_q('seg:' + seg)} [label={_q(label)}];")
    for a, b, label in p.links:
        out.append(f"  {_q(a)} -- {_q(b)} [label={_q(label)}, penwidth=2];")
    for a, b, kind, text in p.reach:
        color, _ = REACH_STYLE.get(kind, ("#000000", kind))
        out.append(
            f"  {_q(a)} -- {_q(b)} [style=dashed, color={_q(color)}, fontcolor={_q(color)}, "
            f"label={_q(text)}, constraint=false, penwidth=2];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def gather(view: LabView) -> Picture:
    """Read the live lab into a ``Picture``."""
    from podnet.verify.status import cluster_status

    topo = view.topology
    live = set(view.hosts())
    segments = []
    for net in topo.networks:
        seg = f"sw-{net.name}"
        mtu = view.links(seg)["br0"].mtu if seg in live and "br0" in view.links(seg) else net.mtu
        segments.append((net.name, ", ".join(str(c) for c in (net.cidr, net.ipv6) if c is not None), mtu))
    status = cluster_status(view, None, False)["nodes"]
    hosts, attachments, links = [], [], []
    for h in topo.hosts:
        if h.name not in live:
            continue
        label = h.name
        if h.role == "node":
            cidrs = ", ".join((status.get(h.name, {}).get("ipam") or {}).get("podCIDRs") or [])
            label = f"{h.name}\\n{h.primary.ip}\\npods {cidrs}"
        elif h.role == "router" and h.asn:
            label = f"{h.name}\\nAS{h.asn}"
        hosts.append((h.name, h.role, label))
        for i in h.interfaces:
            link = view.links(h.name).get(i.name)
            mtu_text = f" mtu {link.mtu}" if link is not None else " (missing)"
            if i.network:
                attachments.append((h.name, i.network, f"{i.name} {i.ip}{mtu_text}"))
            elif i.peer and h.name < i.peer:
                links.append((h.name, i.peer, f"{(i.address or i.ipv6).network}{mtu_text}"))  # type: ignore[union-attr]
    pods = tuple((p, info["node"], ", ".join(info.get("ips") or [])) for p, info in sorted(view.pods.items()))
    reach = []
    for a, s in status.items():
        for peer in s.get("peers", []):
            if a < peer["name"]:
                back = next(
                    (q for q in status.get(peer["name"], {}).get("peers", []) if q["name"] == a), None
                )
                text = (
                    peer["path"]
                    if back is None or back["kernelReach"] == peer["kernelReach"]
                    else (f"{a}: {peer['path']} / {peer['name']}: {back['path']}")
                )
                reach.append((a, peer["name"], peer["kernelReach"], text))
    mode = next((s["routing"]["summary"] for s in status.values() if s.get("routing")), "no agents")
    return Picture(
        view.name, mode, tuple(segments), tuple(hosts), tuple(attachments), tuple(links), pods, tuple(reach)
    )


def render(dot_source: str, path: Path) -> Path:
    """Run Graphviz ``dot`` to write ``path`` (.svg, .png) or just save the source (.dot)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".") or "svg"
    if fmt == "dot":
        path.write_text(dot_source)
        return path.resolve()
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"{path}: choose .svg, .png, .pdf or .dot")
    res = subprocess.run(
        ["dot", f"-T{fmt}", "-o", str(path)], input=dot_source, capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        raise RuntimeError(f"graphviz dot failed to write {path}: {res.stderr.strip()}")
    return path.resolve()
