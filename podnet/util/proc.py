"""Starting long-running processes inside a network namespace, detached, with a log file.

The lab records every PID it gets here and later stops exactly those PIDs; nothing is ever
killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def spawn(
    argv: Sequence[str], netns: str | None, log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``netns`` (``ip netns exec`` execs it, so the PID is the program's).

    The child gets ``child_env(env)``: no ``PODNET_*`` of the caller but ``PODNET_RUN_DIR``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            start_new_session=True,
        )


KEPT_PODNET_VARS = frozenset({"PODNET_RUN_DIR", "PODNET_PLUGINS"})  # plugins: the same in every process


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its ``PODNET_*`` settings (they would override the lab
    agents' YAML), except ``PODNET_RUN_DIR``; then ``env`` on top."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PODNET_") or k in KEPT_PODNET_VARS}
    return {**base, **(env or {})}


def stop(proc: subprocess.Popen[Any], first: int = signal.SIGTERM, grace: float = 3.0) -> None:
    """Stop a child we started, by its PID: ``first`` (SIGINT lets tcpdump flush), SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, first)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
