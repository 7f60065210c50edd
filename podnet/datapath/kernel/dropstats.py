"""The kernel's own drop counters of one network namespace, by what they mean.

``/proc/net/snmp``, ``/proc/net/netstat`` and ``/proc/net/snmp6`` count packets the IP stack
threw away and why (no route, too big with DF, bad headers, discards, reverse-path filter);
``/proc/net/dev`` counts each interface's dropped packets. They are per namespace, so a node's
agent reads its node's and ``podnet diagnose`` reads each lab host's, with no hook anywhere.
Parsing is pure.
"""

from __future__ import annotations

from pathlib import Path

# the kernel's counters of packets it threw away, by what they mean (per namespace)
KERNEL_DROPS = {
    "Ip.OutNoRoutes": "no-route",
    "IpExt.InNoRoutes": "no-route",
    "Ip.InAddrErrors": "no-route",
    "Ip6.Ip6InNoRoutes": "no-route",
    "Ip6.Ip6OutNoRoutes": "no-route",
    "Ip.FragFails": "mtu",
    "Ip6.Ip6InTooBigErrors": "mtu",
    "Ip6.Ip6FragFails": "mtu",
    "Ip.InHdrErrors": "header",
    "Ip6.Ip6InHdrErrors": "header",
    "Ip.InDiscards": "discard",
    "Ip.OutDiscards": "discard",
    "Ip6.Ip6InDiscards": "discard",
    "Ip6.Ip6OutDiscards": "discard",
    "TcpExt.IPReversePathFilter": "rp-filter",
}


def read(proc_net: Path = Path("/proc/net")) -> tuple[dict[str, int], dict[str, int]]:
    """This process's namespace's kernel drop counters and interface drops."""

    def text(name: str) -> str:
        try:
            return (proc_net / name).read_text()
        except OSError:
            return ""

    pairs = text("snmp") + text("netstat")
    return parse_kernel_counters(pairs, text("snmp6")), parse_link_drops(text("dev"))


def parse_kernel_counters(pairs: str, snmp6: str) -> dict[str, int]:
    """``KERNEL_DROPS`` from /proc/net/snmp and netstat (a header line, then a value line, per
    group) and snmp6 (one ``name value`` per line) (pure)."""
    found: dict[str, int] = {}
    lines = pairs.splitlines()
    for header, values in zip(lines[0::2], lines[1::2], strict=False):
        group = header.split(":")[0]
        for k, v in zip(header.split()[1:], values.split()[1:], strict=False):
            if f"{group}.{k}" in KERNEL_DROPS:
                found[f"{group}.{k}"] = int(v)
    for line in snmp6.splitlines():
        parts = line.split()
        if len(parts) == 2 and f"Ip6.{parts[0]}" in KERNEL_DROPS:
            found[f"Ip6.{parts[0]}"] = int(parts[1])
    return found


def parse_link_drops(dev: str) -> dict[str, int]:
    """Each interface's dropped packets, received plus sent, from /proc/net/dev (pure)."""
    found = {}
    for line in dev.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if "|" not in line and len(fields) >= 16:
            found[name.strip()] = int(fields[3]) + int(fields[11])
    return found
