"""Files that may hold secrets (BGP passwords, key paths, etcd credentials): written 0600, root's.

``write_private`` writes a temporary file created with mode 0600 (never briefly readable by
others), syncs it, and renames it into place, so a reader sees the old or the new file whole.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: str | os.PathLike[str], text: str) -> Path:
    final = Path(path)
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing temporary file keeps its mode otherwise
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return final


def log_tail(path: str | Path, lines: int = 8) -> str:
    """The last lines of a log, for error messages (a failed ``lab up`` removes the lab dir)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n    | ".join(["", *text[-lines:]]) if text else ""
