"""What the probes ``podnet diagnose`` follows say: where a probe was lost and why (from the
counters that rose meanwhile), the NetworkPolicy that isolates a pod, or a TCP/UDP probe dropped
where the echoes passed (``follow`` sends and watches; ``explain`` words the verdict)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from podnet.agent.api import request
from podnet.datapath.kernel import dropstats
from podnet.statusdoc.policy import PodPolicy
from podnet.verify import explain, follow
from podnet.verify.explain import Drop
from podnet.verify.follow import ProbeRun
from podnet.verify.view import PathView, Place


class ProbeVerdicts:
    def __init__(self, view: PathView, tunnel_label: Callable[[], str]) -> None:
        self.view = view
        self._tunnel_label = tunnel_label  # how the path's tunnel is named (its display name and port)

    def follow(
        self, src: Place, dst: Place, size: int, forward: list[str], reply: list[str] | None
    ) -> tuple[ProbeRun, Drop | None]:
        path = follow.path_hosts(self.view, forward, src, dst)
        back = follow.path_hosts(self.view, reply, dst, src) if reply is not None else list(reversed(path))
        between = follow.bridges(self.view, [*path, *back])
        watch = [*path, *(h for h in back if h not in path), *between]
        # the TCP probe where the pod guard lets it through: to pods and the world, or not from a pod
        tcp = dst.kind in ("pod", "external") or src.kind != "pod"
        run = follow.follow(self.view, src, dst, size, watch, tcp=tcp)
        if not run.sent[1] or not run.sent[0]:
            return run, Drop(
                src.host,
                "mtu" if run.sent[0] else "inconclusive",
                f"{src.describe()} cannot send the probe: {run.send_error}",
                f"the route MTU on {src.host} is smaller than {size} bytes: `ip -n {self.view.ns(src.host)} "
                f"route get {dst.ip}` shows it",
            )
        loss = follow.locate(run, path, back)
        if loss is None:
            return run, self._port_drop(run, src, dst)
        return run, self._named(explain.probe_drop(self._probe_loss(run, loss, between, src, dst)), src, dst)

    def _named(self, drop: Drop, src: Place, dst: Place) -> Drop:
        """A NetworkPolicy drop with the policies that isolate the pod, from its node's agent."""
        if drop.kind != "policy-denied":
            return drop
        egress = "(egress)" in drop.reason
        ip = src.ip if egress else dst.ip
        try:
            answer = request(self.view.agent_socket(drop.host), {"op": "policy", "ip": str(ip)}, timeout=5.0)
        except (OSError, ValueError):
            return drop
        names = PodPolicy.from_json(answer).isolated_by(egress)
        if not names:
            return drop
        return dataclasses.replace(drop, reason=f"{drop.reason}; policies isolating {ip}: {', '.join(names)}")

    def _port_drop(self, run: ProbeRun, src: Place, dst: Place) -> Drop | None:
        """Every echo came back; the TCP or the UDP probe did not: the traced rule that dropped it,
        else an inconclusive verdict (never "works")."""
        failed = [(name, res) for name, res in (("TCP", run.tcp), ("UDP", run.udp)) if res and not res[0]]
        if not failed:
            return None
        names = " and ".join(name for name, _ in failed)
        what = f"{names} {src.describe()} -> {dst.ip}:{run.tcp_port}"
        for host, counters in run.counters.items():
            if counters.port_drops:
                rule = counters.port_drops[0]
                found = explain.traced_drop(host, self.view.role(host), self.view.ns(host), rule, what)
                found = self._named(found, src, dst)
                return dataclasses.replace(found, reason=f"{found.reason}; the ICMP probes pass")
        details = "; ".join(f"{name}: {res[1]}" for name, res in failed)
        return Drop(
            src.host,
            "inconclusive",
            f"inconclusive: the ICMP probes came back, but {what} failed ({details}) and no nftables "
            "rule on the way traced its drop",
            f"look for what drops {names} but not ICMP: tc filters, BPF programs, the destination's own "
            "listener or firewall; `podnet drops` for podnet's own drops",
        )

    def _probe_loss(
        self, run: ProbeRun, loss: follow.Loss, between: list[str], src: Place, dst: Place
    ) -> explain.ProbeLoss:
        host, next_host, iface = loss.host, loss.between, loss.iface_in
        if next_host:  # a bridge between the two that took it in and did not pass it on
            for bridge in between:
                here = [
                    s
                    for s in run.sightings
                    if s.host == bridge and (s.reply, s.big) == (loss.reply, loss.big)
                ]
                if any(not s.outgoing for s in here) and not any(s.outgoing for s in here):
                    host, next_host, iface = bridge, "", next(s.iface for s in here if not s.outgoing)
        counters = run.counters.get(host) or follow.HostCounters()
        direction = (
            f"{dst.describe()} -> {src.describe()} (the echo reply)"
            if loss.reply
            else f"{src.describe()} -> {dst.describe()}"
        )
        tunnel = ""
        if loss.inside_tunnel:
            tunnel = self._tunnel_label()
        return explain.ProbeLoss(
            host=host,
            role=self.view.role(host),
            between=next_host,
            direction=direction,
            size=run.size if loss.big else follow.SMALL,
            small_passed=loss.big and run.answered[0],
            tunnel=tunnel,
            iface=iface,
            nft_drops=counters.nft_drops,
            kernel=counters.kernel,
            kernel_meaning=tuple(dropstats.KERNEL_DROPS.get(k, "") for k, _ in counters.kernel),
            links=counters.links,
            ns=self.view.ns(host),
            qdiscs=counters.qdiscs,
        )
