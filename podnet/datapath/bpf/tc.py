"""Attaching podnet's programs with tc, idempotently, in the namespace of a pyroute2 socket.

    tc qdisc replace dev DEV clsact
    tc filter replace dev DEV {ingress|egress} pref PREF handle 1 bpf direct-action obj O sec tc

``pref`` with ``handle`` makes ``replace`` replace podnet's filter instead of adding a second one.
A filter whose ``bpf_name`` is the current object's is kept as it is (its maps keep their entries
across an agent restart); ``detach`` removes podnet's filter only, and the clsact qdisc when no
filter is left on the device.
"""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

HANDLE = "1"
HANDLE_NUMBER = 1


class TcError(OSError):
    """tc refused; the message carries its words."""


@dataclass(frozen=True)
class Attached:
    """A bpf filter as ``tc -j filter show`` lists it."""

    dev: str
    direction: str
    pref: int
    name: str  # bpf_name: "<object file>:[tc]"
    prog_id: int


def _tc(netns: str | None, *args: str, check: bool = True) -> str:
    argv = ["tc", *(["-n", netns] if netns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise TcError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def filters(netns: str | None, dev: str, direction: str) -> list[Attached]:
    """podnet-relevant facts of every bpf filter on ``dev``'s ``direction`` hook."""
    out = _tc(netns, "-j", "filter", "show", "dev", dev, direction, check=False)
    found = []
    for item in json.loads(out or "[]"):
        options = item.get("options") or {}
        prog = options.get("prog") or {}
        if item.get("kind") == "bpf" and "id" in prog:
            found.append(Attached(dev, direction, int(item.get("pref", 0)), str(options.get("bpf_name", "")),
                                  int(prog["id"])))  # fmt: skip
    return found


def attach(
    netns: str | None, dev: str, direction: str, pref: int, obj: Path, ipr: Any = None
) -> tuple[Attached, bool]:
    """podnet's program ``obj`` at ``pref`` on ``dev``; True when it was (re)attached now. With
    ``ipr`` (a socket in ``netns``), a program already there is found without a ``tc`` process."""
    present = listed(ipr, dev, direction) if ipr is not None else filters(netns, dev, direction)
    mine = [f for f in present if f.pref == pref]
    if mine and mine[0].name.startswith(obj.name):
        return mine[0], False
    _tc(netns, "qdisc", "replace", "dev", dev, "clsact")
    _tc(netns, "filter", "replace", "dev", dev, direction, "pref", str(pref), "handle", HANDLE,
        "bpf", "direct-action", "obj", str(obj), "sec", "tc")  # fmt: skip
    now = [f for f in filters(netns, dev, direction) if f.pref == pref]
    if not now:
        raise TcError(f"tc attached {obj.name} to {dev} {direction} but does not list it")
    return now[0], True


def detach(netns: str | None, dev: str, direction: str, pref: int) -> bool:
    """Remove podnet's filter at ``pref``; the clsact qdisc goes too when nothing else is on it."""
    if not any(f.pref == pref for f in filters(netns, dev, direction)):
        return False
    _tc(
        netns, "filter", "del", "dev", dev, direction, "pref", str(pref), "handle", HANDLE, "bpf", check=False
    )
    left = _tc(netns, "-j", "filter", "show", "dev", dev, "ingress", check=False).strip()
    left += _tc(netns, "-j", "filter", "show", "dev", dev, "egress", check=False).strip()
    if left in ("", "[][]"):
        _tc(netns, "qdisc", "del", "dev", dev, "clsact", check=False)
    return True


INGRESS_PARENT = 0xFFFFFFF2  # clsact's ingress hook (TC_H_CLSACT:TC_H_MIN_INGRESS)
PARENTS = {"ingress": INGRESS_PARENT, "egress": 0xFFFFFFF3}
TCA_BPF_NAME, TCA_BPF_ID = 7, 11  # pyroute2 leaves the program id undecoded


def listed(ipr: Any, dev: str, direction: str, index: int | None = None) -> list[Attached]:
    """``filters`` over ``ipr``'s netlink socket (its namespace), without a ``tc`` process: what
    host routing reads for every device on each round and each ``status``. ``index``: the
    device's, when the caller has it (a lookup by name dumps every link)."""
    found: list[Attached] = []
    if index is None:
        index = next(iter(ipr.link_lookup(ifname=dev)), None)
    if index is None:
        return found
    try:
        msgs = ipr.get_filters(index=index, parent=PARENTS[direction])
    except NetlinkError:
        return found  # no clsact qdisc
    for msg in msgs:
        options = msg.get_attr("TCA_OPTIONS")
        if msg.get_attr("TCA_KIND") != "bpf" or not options:
            continue
        attrs = _nested(bytes(options.data[options.offset + 4 : options.offset + options.length]))
        if TCA_BPF_ID in attrs:
            name = attrs.get(TCA_BPF_NAME, b"").split(b"\0")[0].decode()
            prog_id = struct.unpack("=I", attrs[TCA_BPF_ID])[0]
            found.append(Attached(dev, direction, msg["info"] >> 16, name, prog_id))
    return found


def _nested(raw: bytes) -> dict[int, bytes]:
    """A netlink attribute block: type -> payload."""
    attrs, pos = {}, 0
    while pos + 4 <= len(raw):
        length, kind = struct.unpack_from("=HH", raw, pos)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = raw[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return attrs


def attach_fd(ipr: Any, index: int, pref: int, prog_fd: int, name: str) -> None:
    """``tc filter replace dev <index> ingress pref PREF handle 1 bpf da`` of an already loaded
    program (by descriptor), so that every device shares one program and its maps."""
    with contextlib.suppress(NetlinkError):  # there already
        ipr.tc("add", "clsact", index)
    ipr.tc("replace-filter", "bpf", index, HANDLE_NUMBER, fd=prog_fd, name=name, parent=INGRESS_PARENT,
           prio=pref, direct_action=True, classid=1)  # fmt: skip
