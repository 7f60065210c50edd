"""Reading and writing a program's maps by id with the ``bpf(2)`` system call (ids are global: no
bpffs, no pinning, and a restarted agent finds the maps of the program that kept running).

Each call opens the map by id, acts and closes it: a few microseconds, where a ``bpftool``
process costs a few milliseconds of CPU (host routing reads about twenty maps per round and per
``status``). The answers are those of ``bpftool -j map dump``: a per-CPU value is each possible
CPU's ``value_size`` bytes, concatenated.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct
from collections.abc import Iterator
from contextlib import contextmanager


class MapError(OSError):
    """The kernel refused; the message names the call and the map."""


# bpf(2) commands and the facts of their attributes (include/uapi/linux/bpf.h)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_PROG_GET_FD_BY_ID, MAP_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 13, 14, 15
NR_BPF = {"x86_64": 321, "aarch64": 280}
PERCPU_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ATTR_SIZE = 128
MAP_INFO_SIZE = 80  # struct bpf_map_info up to btf_value_type_id: type, id, key/value size, ..., name[16]
PROG_INFO_SIZE = 72  # struct bpf_prog_info up to map_ids


@functools.cache
def _syscall() -> tuple[ctypes.CDLL, int]:
    return ctypes.CDLL(None, use_errno=True), NR_BPF[platform.machine()]


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    libc, nr = _syscall()
    ret = int(libc.syscall(nr, cmd, attr, ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise MapError(err, f"bpf({what}): {os.strerror(err)}")
    return ret


def _attr(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buf is None else ctypes.addressof(buf)


@contextmanager
def _map_fd(map_id: int) -> Iterator[int]:
    fd = _bpf(MAP_GET_FD_BY_ID, _attr(struct.pack("=III", map_id, 0, 0)), f"MAP_GET_FD_BY_ID {map_id}")
    try:
        yield fd
    finally:
        os.close(fd)


def _info(fd: int, size: int, head: bytes = b"") -> bytes:
    info = ctypes.create_string_buffer(head.ljust(size, b"\0"), size)
    _bpf(OBJ_GET_INFO_BY_FD, _attr(struct.pack("=IIQ", fd, size, _addr(info))), f"OBJ_GET_INFO_BY_FD {fd}")
    return info.raw


@functools.cache
def _possible_cpus() -> int:
    """How many values a per-CPU map holds: one per *possible* CPU (``/sys/.../cpu/possible``)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def _shape(fd: int) -> tuple[int, int, int, str]:
    """A map's (type, key size, value size, name)."""
    info = _info(fd, MAP_INFO_SIZE)
    kind, _id, key_size, value_size = struct.unpack_from("=IIII", info)
    return kind, key_size, value_size, info[24:40].split(b"\0")[0].decode()


def _value_buffer(kind: int, value_size: int) -> tuple[ctypes.Array[ctypes.c_char], int]:
    """The buffer a lookup fills and the stride of one CPU's value in it."""
    if kind in PERCPU_TYPES:
        stride = (value_size + 7) // 8 * 8
        return ctypes.create_string_buffer(stride * _possible_cpus()), stride
    return ctypes.create_string_buffer(value_size), value_size


def _check_sizes(fd: int, map_id: int, key: bytes, value: bytes | None) -> None:
    """The kernel reads exactly the map's key and value sizes from the buffers: anything else
    would read past them."""
    kind, key_size, value_size, name = _shape(fd)
    want = len(_value_buffer(kind, value_size)[0]) if kind in PERCPU_TYPES else value_size
    if len(key) != key_size or (value is not None and len(value) != want):
        got = f"key {len(key)} bytes" + ("" if value is None else f", value {len(value)} bytes")
        raise MapError(22, f"map {map_id} ({name}) takes key {key_size} bytes, value {want} bytes; {got}")


def program_maps(prog_id: int) -> dict[str, int]:
    """The maps a loaded program uses, name -> id."""
    fd = program_fd(prog_id)
    try:
        count = struct.unpack_from("=I", _info(fd, PROG_INFO_SIZE), 52)[0]
        ids = ctypes.create_string_buffer(4 * max(count, 1))
        head = struct.pack("=52xIQ", count, _addr(ids))
        _info(fd, PROG_INFO_SIZE, head)
    finally:
        os.close(fd)
    found = {}
    for (map_id,) in struct.iter_unpack("=I", ids.raw[: 4 * count]):
        with _map_fd(map_id) as map_fd:
            found[_shape(map_fd)[3]] = map_id
    return found


def update(map_id: int, key: bytes, value: bytes) -> None:
    """Set ``key`` to ``value`` (created when missing); a per-CPU map takes every CPU's value."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    with _map_fd(map_id) as fd:
        _check_sizes(fd, map_id, key, value)
        attr = _attr(struct.pack("=IxxxxQQQ", fd, _addr(k), _addr(v), 0))
        _bpf(MAP_UPDATE_ELEM, attr, f"MAP_UPDATE_ELEM map {map_id}")


def delete(map_id: int, key: bytes) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    with _map_fd(map_id) as fd:
        _check_sizes(fd, map_id, key, None)
        _bpf(MAP_DELETE_ELEM, _attr(struct.pack("=IxxxxQ", fd, _addr(k))), f"MAP_DELETE_ELEM map {map_id}")


def dump(map_id: int) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash or array map (a per-CPU value is each CPU's, concatenated)."""
    found = []
    with _map_fd(map_id) as fd:
        kind, key_size, value_size, _ = _shape(fd)
        value, stride = _value_buffer(kind, value_size)
        key: ctypes.Array[ctypes.c_char] | None = None
        while True:
            following = ctypes.create_string_buffer(key_size)
            try:
                attr = _attr(struct.pack("=IxxxxQQ", fd, _addr(key), _addr(following)))
                _bpf(MAP_GET_NEXT_KEY, attr, f"MAP_GET_NEXT_KEY map {map_id}")
            except MapError as exc:
                if exc.errno == 2:  # ENOENT: no key after the last one
                    break
                raise
            key = following
            try:
                attr = _attr(struct.pack("=IxxxxQQQ", fd, _addr(key), _addr(value), 0))
                _bpf(MAP_LOOKUP_ELEM, attr, f"MAP_LOOKUP_ELEM map {map_id}")
            except MapError as exc:
                if exc.errno == 2:  # deleted between the two calls
                    continue
                raise
            raw = value.raw
            data = b"".join(raw[i : i + value_size] for i in range(0, len(raw), stride))
            found.append((key.raw, data))
    return found


def program_fd(prog_id: int) -> int:
    """A descriptor of the loaded program ``prog_id`` (``bpf(BPF_PROG_GET_FD_BY_ID)``); the caller
    closes it. This is how a program loaded once is attached to more devices."""
    attr = _attr(struct.pack("=III", prog_id, 0, 0))
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, f"PROG_GET_FD_BY_ID {prog_id}")


def counters(map_id: int, names: tuple[str, ...]) -> dict[str, int]:
    """A per-CPU array of counters summed over the CPUs, slot i named ``names[i]``."""
    totals = dict.fromkeys(names, 0)
    for key, value in dump(map_id):
        slot = struct.unpack("=I", key)[0]
        if slot < len(names):
            totals[names[slot]] += sum(struct.unpack(f"={len(value) // 8}Q", value))
    return totals
