"""nftables in the calling thread's network namespace only.

``apply_script`` runs one transaction (all of it applies or none of it does) through libnftables,
in process: the pod guard lets each new pod in from the CNI ADD path, where starting ``nft`` would
cost ~10 ms a pod. Without the library it runs ``nft -f -``. ``list_table`` reads a table back
through ``nft -j`` for status. Only podnet's tables (``owned.NFT_TABLE``, ``owned.GUARD_TABLE``)
are ever touched.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading
from typing import Any

from podnet import owned


class NftError(RuntimeError):
    """nft refused a ruleset; the message carries nft's own words."""


def nft_binary() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise NftError("nft not found: install the Debian package nftables")
    return found


class _Libnftables:
    """libnftables (Debian libnftables1, which nftables depends on) through ctypes: one context
    per network namespace, each used under one lock (a context is not thread-safe)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib
        self._contexts: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def run(self, script: str) -> str | None:
        """Apply ``script`` in the calling thread's namespace; nft's error text, or None."""
        st = os.stat("/proc/thread-self/ns/net")
        with self._lock:
            ctx = self._contexts.get((st.st_dev, st.st_ino))
            if ctx is None:
                ctx = self._lib.nft_ctx_new(0)  # its netlink socket lives in this namespace
                if not ctx:
                    return "libnftables could not make a context"
                self._lib.nft_ctx_buffer_output(ctx)
                self._lib.nft_ctx_buffer_error(ctx)
                self._contexts[(st.st_dev, st.st_ino)] = ctx
            if self._lib.nft_run_cmd_from_buffer(ctx, script.encode()) == 0:
                return None
            error = self._lib.nft_ctx_get_error_buffer(ctx) or b""
            return error.decode(errors="replace").strip() or "libnftables refused the script"


def _load_libnftables() -> _Libnftables | None:
    for name in ("libnftables.so.1", "libnftables.so"):
        try:
            return _Libnftables(ctypes.CDLL(name))
        except (OSError, AttributeError):
            continue
    return None


_LIB = _load_libnftables()


def apply_script(script: str) -> None:
    if _LIB is not None:
        error = _LIB.run(script)
        if error is not None:
            raise NftError(f"nft rejected podnet's table: {error}")
        return
    res = subprocess.run([nft_binary(), "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise NftError(f"nft rejected podnet's table: {res.stderr.strip()}")


def list_table(table: str = owned.NFT_TABLE, family: str = "ip") -> dict[str, Any] | None:
    """The table as nft's JSON, or None when it does not exist."""
    res = subprocess.run(
        [nft_binary(), "-j", "list", "table", family, table], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        return None
    return json.loads(res.stdout)
