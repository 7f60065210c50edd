"""Install the podnet CNI plugin on a node: the ``podnet`` launcher and ``05-podnet.conflist``.

The launcher is a two-line shell script that execs this Python with ``-m podnet.cni.shim``, so the
container runtime finds an executable named after the conflist's plugin ``type``. Directories are
parameters: tests install into ``tmp_path``, a real host uses /opt/cni/bin and /etc/cni/net.d.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from podnet.cni import spec

PLUGIN_NAME = "podnet"
CONFLIST_NAME = "05-podnet.conflist"
NETWORK_NAME = "podnet"


@dataclass(frozen=True)
class Installed:
    binary: Path
    conflist: Path


def launcher_script(python: str = sys.executable) -> str:
    return f'#!/bin/sh\nexec {shlex.quote(python)} -m podnet.cni.shim "$@"\n'


def conflist(socket: str = spec.DEFAULT_AGENT_SOCKET, network: str = NETWORK_NAME) -> dict[str, object]:
    plugin: dict[str, object] = {"type": PLUGIN_NAME}
    if socket != spec.DEFAULT_AGENT_SOCKET:
        plugin["agentSocket"] = socket
    return {"cniVersion": spec.CURRENT_VERSION, "name": network, "plugins": [plugin]}


def install_cni(
    bin_dir: str | Path = "/opt/cni/bin",
    conf_dir: str | Path = "/etc/cni/net.d",
    socket: str = spec.DEFAULT_AGENT_SOCKET,
    python: str = sys.executable,
) -> Installed:
    """Write (atomically, idempotently) the launcher and the conflist; returns their paths."""
    binary = Path(bin_dir) / PLUGIN_NAME
    conf = Path(conf_dir) / CONFLIST_NAME
    _write_atomic(binary, launcher_script(python), 0o755)
    _write_atomic(conf, json.dumps(conflist(socket), indent=2) + "\n", 0o644)
    return Installed(binary=binary, conflist=conf)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
