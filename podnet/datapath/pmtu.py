"""Path MTU discovery towards every peer: a DF probe at the size the datapath will send.

The underlay must carry, per packet to a peer: the pods' route MTU plus the tunnel overhead
when the peer is reached through the tunnel, or the route MTU itself when it is reached
natively. One ``ping -M do`` of exactly that size tells; when a router on the way has a smaller
link it answers "fragmentation needed" (ICMPv6 "packet too big") and the kernel caches the path MTU, which
``ip route get`` then reports. A peer whose path is smaller than required is a black hole in
the making (full-size pod packets vanish): it is reported with the size that would fit.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from podnet.datapath.modes.base import Reach
from podnet.model import IPAddress

IP_ICMP_HEADERS = {4: 28, 6: 48}  # IPv4 20 + ICMP 8; IPv6 40 + ICMPv6 8
SMALL_PROBE = 128  # tells "the path is too small" from "the peer does not answer at all"


@dataclass(frozen=True)
class PathMtu:
    peer: str
    address: str
    required: int
    ok: bool
    discovered: int | None = None
    detail: str = ""
    reachable: bool = True

    def message(self, overhead: int) -> str:
        if self.ok:
            return f"path to {self.peer} ({self.address}) carries {self.required}-byte packets"
        if not self.reachable:
            return f"node {self.peer} ({self.address}) does not answer even small DF probes: {self.detail}"
        fits = f"carries only {self.discovered} bytes" if self.discovered else "drops full-size packets"
        advice = (
            f"set MTU to {self.discovered} or less (route MTU {self.discovered - overhead})"
            if self.discovered
            else "check the underlay's MTU on every hop"
        )
        return (
            f"path MTU black hole: the path to {self.peer} ({self.address}) {fits}, but podnet sends "
            f"{self.required}-byte packets to it; {advice}"
        )


def probe_families(reach: Reach, pod_families: Iterable[int], underlay_family: int) -> tuple[int, ...]:
    """The families of a peer's addresses that pod traffic to it uses on the underlay: the tunnel's
    (``underlayProtocol``) for a tunnelled peer, each pod family for a natively routed one."""
    if reach is Reach.TUNNEL:
        return (underlay_family,)
    if reach in (Reach.DIRECT, Reach.UNDERLAY):
        return tuple(sorted(set(pod_families)))
    return ()


def required_size(reach: Reach, route_mtu: int, overhead: int) -> int | None:
    """Bytes per underlay packet towards a peer reached as ``reach`` (None: nothing to probe)."""
    if reach is Reach.TUNNEL:
        return route_mtu + overhead
    if reach in (Reach.DIRECT, Reach.UNDERLAY):
        return route_mtu
    return None


def df_ping(address: str, size: int, timeout: float = 1.0) -> tuple[bool, str]:
    """One ICMP(v6) echo of ``size`` bytes on the wire that must not be fragmented, from this
    namespace. A smaller hop answers "fragmentation needed" (IPv4) or "packet too big" (ICMPv6);
    either way the kernel caches the path MTU."""
    headers = IP_ICMP_HEADERS[6 if ":" in address else 4]
    res = subprocess.run(
        ["ping", "-n", "-q", "-c", "1", "-W", str(timeout), "-M", "do", "-s", str(size - headers), address],
        capture_output=True, text=True, timeout=timeout + 5,
    )  # fmt: skip
    out = (res.stdout + res.stderr).strip().splitlines()
    return res.returncode == 0, out[-1] if out else ""


def small_ping(address: str, timeout: float = 1.0) -> tuple[bool, str]:
    """One small ICMP(v6) echo from this namespace: does ``address`` answer at all?"""
    res = subprocess.run(
        ["ping", "-n", "-q", "-c", "1", "-W", str(timeout), address],
        capture_output=True, text=True, timeout=timeout + 5,
    )  # fmt: skip
    out = (res.stdout + res.stderr).strip().splitlines()
    return res.returncode == 0, out[-1] if out else ""


def probe_peers(
    targets: Iterable[tuple[str, IPAddress, int]],
    cached_mtu: Callable[[IPAddress], int | None],
    ping: Callable[[str, int], tuple[bool, str]] = df_ping,
) -> list[PathMtu]:
    """Probe (peer, address, required size) triples; a failure is retried once (the first DF
    probe is what teaches the kernel the path MTU), then reported with the cached path MTU."""
    results = []
    for peer, address, size in targets:
        ok, detail = ping(str(address), size)
        if not ok:
            ok, detail = ping(str(address), size)
        discovered = None if ok else cached_mtu(address)
        reachable = ok or discovered is not None or ping(str(address), SMALL_PROBE)[0]
        results.append(PathMtu(peer, str(address), size, ok, discovered, detail, reachable))
    return results
