"""Reading and writing a program's maps by id with bpftool (ids are global: no bpffs, no pinning,
and a restarted agent finds the maps of the program that kept running)."""

from __future__ import annotations

import json
import struct
import subprocess


class MapError(OSError):
    """bpftool refused; the message carries its words."""


def _bpftool(*args: str) -> str:
    argv = ["bpftool", *args]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise MapError("bpftool is not installed: run scripts/setup.sh (apt-get install bpftool)") from None
    if res.returncode != 0:
        raise MapError(f"{' '.join(argv[:4])}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def program_maps(prog_id: int) -> dict[str, int]:
    """The maps a loaded program uses, name -> id."""
    prog = json.loads(_bpftool("-j", "prog", "show", "id", str(prog_id)))
    found = {}
    for map_id in prog.get("map_ids", []):
        info = json.loads(_bpftool("-j", "map", "show", "id", str(map_id)))
        found[str(info.get("name"))] = int(map_id)
    return found


def _hex(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def update(map_id: int, key: bytes, value: bytes) -> None:
    _bpftool("map", "update", "id", str(map_id), "key", *_hex(key), "value", *_hex(value))


def delete(map_id: int, key: bytes) -> None:
    _bpftool("map", "delete", "id", str(map_id), "key", *_hex(key))


def dump(map_id: int) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash or array map (a per-CPU value is each CPU's, concatenated)."""
    found = []
    for entry in json.loads(_bpftool("-j", "map", "dump", "id", str(map_id)) or "[]"):
        key = bytes(int(b, 16) for b in entry.get("key", []))
        if "values" in entry:  # per-CPU
            value = b"".join(bytes(int(b, 16) for b in v["value"]) for v in entry["values"])
        else:
            value = bytes(int(b, 16) for b in entry.get("value", []))
        found.append((key, value))
    return found


BPF_PROG_GET_FD_BY_ID = 13
NR_BPF = {"x86_64": 321, "aarch64": 280}


def program_fd(prog_id: int) -> int:
    """A descriptor of the loaded program ``prog_id`` (``bpf(BPF_PROG_GET_FD_BY_ID)``); the caller
    closes it. This is how a program loaded once is attached to more devices."""
    import ctypes
    import os
    import platform

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("=III", prog_id, 0, 0).ljust(128, b"\0"))
    fd = libc.syscall(NR_BPF[platform.machine()], BPF_PROG_GET_FD_BY_ID, attr, ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise MapError(f"bpf(PROG_GET_FD_BY_ID {prog_id}): {os.strerror(err)}")
    return int(fd)


def counters(map_id: int, names: tuple[str, ...]) -> dict[str, int]:
    """A per-CPU array of counters summed over the CPUs, slot i named ``names[i]``."""
    totals = dict.fromkeys(names, 0)
    for key, value in dump(map_id):
        slot = struct.unpack("=I", key)[0]
        if slot < len(names):
            totals[names[slot]] += sum(struct.unpack(f"={len(value) // 8}Q", value))
    return totals
