"""Compiling podnet's tc programs with Debian's clang, once per source version.

``clang -O2 -g -target bpf -I/usr/include/<multiarch> -D<variant> -c <source>.c`` takes about 0.1 s;
the object goes to a cache outside the repository (``PODNET_BPF_CACHE``, default
``/var/cache/podnet/bpf``) named after the source's hash, so an attached program tells by its
``bpf_name`` whether it is the current build (an agent restart then keeps it and its maps).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE = Path("/var/cache/podnet/bpf")


class BpfBuildError(RuntimeError):
    """A program cannot be compiled; the message says what to install or fix."""


def cache_dir() -> Path:
    return Path(os.environ.get("PODNET_BPF_CACHE", str(DEFAULT_CACHE)))


def object_name(source: str, variant: str) -> str:
    """``<source>-<variant>-<12 hex>.o``: the hash of the source, the headers it may include and the
    variant (what tc shows as bpf_name)."""
    try:
        text = b"".join(p.read_bytes() for p in (SOURCE_DIR / source, *sorted(SOURCE_DIR.glob("*.h"))))
    except OSError as exc:
        raise BpfBuildError(
            f"podnet's eBPF source {source} is missing from this installation ({exc.strerror}): reinstall "
            "podnet with its package data"
        ) from None
    digest = hashlib.sha256(text + variant.encode()).hexdigest()[:12]
    return f"{Path(source).stem}-{variant.lower()}-{digest}.o"


def compiled(source: str, variant: str) -> Path:
    """The object for ``source`` built with ``-DPODNET_<VARIANT>``, compiled when not cached."""
    target = cache_dir() / object_name(source, variant)
    if target.exists():
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BpfBuildError(
            "clang is not installed, and podnet's eBPF programs are compiled with it: run "
            "scripts/setup.sh (it installs clang and libbpf-dev) or apt-get install clang libbpf-dev"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    argv = [clang, "-O2", "-g", "-Wall", "-Wno-address-of-packed-member", "-target", "bpf",
            f"-I/usr/include/{multiarch}", f"-DPODNET_{variant.upper()}", "-c", str(SOURCE_DIR / source),
            "-o", str(tmp)]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BpfBuildError(f"compiling {source} ({variant}) failed: {res.stderr.strip()[-800:]}")
    os.replace(tmp, target)  # atomic: two agents compiling at once both end with a whole object
    return target
