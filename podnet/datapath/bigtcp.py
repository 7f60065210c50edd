"""BIG TCP (Cilium's ``enableIPv4BIGTCP`` / ``enableIPv6BIGTCP``): pods and the node's underlay
device send and build TCP packets of up to ``BIG_TCP_SIZE`` bytes instead of 64 KiB, so the stack
is crossed a third as often for the same bytes.

    ip link set dev <underlay> gso_ipv4_max_size 196608 gro_ipv4_max_size 196608   (IPv4)
    ip link set dev <underlay> gso_max_size 196608 gro_max_size 196608             (IPv6)
    every pod veth made with the same sizes on both ends (pods made before keep theirs)

What it buys is per packet: every pass of a packet through a veth, the forward path, conntrack
and netfilter costs the same for 64 KiB as for 192 KiB. The underlay device must take such
packets (its driver's TSO limit); the kernel must be 6.3 or later for IPv4. Where either is
missing the family stays at 64 KiB and the status says why. Off, the sizes podnet set (and only
those: a value it did not write is an operator's) go back to the kernel's 65536. Cilium's own
requirements apply: native routing only (``config.agent`` refuses it with a tunnel), because an
encapsulated packet's outer length field has 16 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.datapath.kernel.rtnl import LinkSizes, Rtnl

BIG_TCP_SIZE = 196608  # Cilium's default GSO/GRO size for BIG TCP (192 KiB)
LEGACY_SIZE = 65536  # the kernel's default and the most a 16-bit length field can say


@dataclass(frozen=True)
class BigTcp:
    """The sizes pods and the underlay use, per family, and why a wanted family is off."""

    ipv4: int = LEGACY_SIZE
    ipv6: int = LEGACY_SIZE
    ipv4_problem: str | None = None
    ipv6_problem: str | None = None

    def veth_sizes(self) -> tuple[int | None, int | None]:
        """(IPv6, IPv4) sizes a new pod veth is made with; None leaves the kernel's default."""
        return (
            self.ipv6 if self.ipv6 != LEGACY_SIZE else None,
            self.ipv4 if self.ipv4 != LEGACY_SIZE else None,
        )


def plan_big_tcp(want_ipv4: bool, want_ipv6: bool, dev: str, sizes: LinkSizes) -> BigTcp:
    """Pure: the sizes to use given what is wanted and what the underlay device ``dev`` can take."""

    def problem(wanted: bool, family_supported: bool, family: str) -> str | None:
        if not wanted:
            return None
        if not family_supported:
            return f"this kernel has no {family} BIG TCP (Linux 6.3 or later); {family} stays at 64 KiB"
        if sizes.tso_max < BIG_TCP_SIZE:
            return (
                f"{dev} takes packets of at most {sizes.tso_max} bytes (its driver's TSO limit), "
                f"BIG TCP needs {BIG_TCP_SIZE}; use a NIC that supports it or turn enable{family}BIGTCP off"
            )
        return None

    problem4 = problem(want_ipv4, sizes.gso_ipv4 is not None, "IPv4")
    problem6 = problem(want_ipv6, True, "IPv6")
    return BigTcp(
        ipv4=BIG_TCP_SIZE if want_ipv4 and problem4 is None else LEGACY_SIZE,
        ipv6=BIG_TCP_SIZE if want_ipv6 and problem6 is None else LEGACY_SIZE,
        ipv4_problem=problem4,
        ipv6_problem=problem6,
    )


def size_changes(plan: BigTcp, sizes: LinkSizes) -> tuple[int | None, int | None]:
    """Pure: the (IPv6, IPv4) sizes to write on the underlay device, None where they are right.
    Going back to 65536 only undoes podnet's own value, never an operator's other size."""

    def wanted(gso: int | None, gro: int | None, planned: int) -> int | None:
        if gso is None or gro is None:
            return None  # the kernel has no such sizes (IPv4 before 6.3)
        if planned > LEGACY_SIZE:
            return planned if (gso, gro) != (planned, planned) else None
        return LEGACY_SIZE if BIG_TCP_SIZE in (gso, gro) else None

    return wanted(sizes.gso, sizes.gro, plan.ipv6), wanted(sizes.gso_ipv4, sizes.gro_ipv4, plan.ipv4)


def apply_big_tcp(sock: Rtnl, index: int, dev: str, want_ipv4: bool, want_ipv6: bool) -> BigTcp:
    """Plan and write the underlay device's sizes (idempotent: nothing is written when they are
    right). Returns what pods get."""
    sizes = sock.get_sizes(index)
    if sizes is None:
        raise RuntimeError(f"underlay device {dev} vanished while BIG TCP was set")
    plan = plan_big_tcp(want_ipv4, want_ipv6, dev, sizes)
    ipv6, ipv4 = size_changes(plan, sizes)
    if ipv6 is not None or ipv4 is not None:
        sock.set_sizes(index, ipv6=ipv6, ipv4=ipv4)
    return plan
