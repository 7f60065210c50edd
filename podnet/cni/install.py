"""Install the podnet CNI plugin on a node: the ``podnet`` launcher and ``05-podnet.conflist``.

The launcher is a tiny Python script named after the conflist's plugin ``type``; it runs this
Python in isolated mode without ``site`` (``-I -S``: no .pth files, no site-packages scan) and puts
only podnet's own directory on ``sys.path``, because the shim needs nothing but the standard
library and starts once per pod (about 10 ms saved per call). Directories are parameters: tests
install into ``tmp_path``, a real host uses /opt/cni/bin and /etc/cni/net.d.
"""

from __future__ import annotations

import json
import os
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


def package_root() -> str:
    """The directory that holds the ``podnet`` package (a checkout or site-packages)."""
    import podnet

    return str(Path(podnet.__file__).resolve().parent.parent)


def launcher_script(python: str = sys.executable) -> str:
    return (
        f"#!{python} -IS\n"
        "import sys\n"
        f"sys.path.insert(0, {package_root()!r})\n"
        "from podnet.cni.shim import main\n"
        "sys.exit(main())\n"
    )


# The conflist's version: what the runtimes' CNI library (libcni 1.1.x, in Debian and most
# distributions, podman, containerd, cnitool) can parse results of. With 1.1.0 they fail after the
# ADD ("unsupported CNI result version"), leaving the pod wired; GC and STATUS need 1.1.0 and
# a runtime that speaks them can be given --cni-version 1.1.0.
CONFLIST_VERSION = "1.0.0"


def conflist(
    socket: str = spec.DEFAULT_AGENT_SOCKET, network: str = NETWORK_NAME, cni_version: str = CONFLIST_VERSION
) -> dict[str, object]:
    if cni_version not in spec.SUPPORTED_VERSIONS:
        raise ValueError(f"cniVersion {cni_version!r} is not one of {', '.join(spec.SUPPORTED_VERSIONS)}")
    plugin: dict[str, object] = {"type": PLUGIN_NAME}
    if socket != spec.DEFAULT_AGENT_SOCKET:
        plugin["agentSocket"] = socket
    return {"cniVersion": cni_version, "name": network, "plugins": [plugin]}


def install_cni(
    bin_dir: str | Path = "/opt/cni/bin",
    conf_dir: str | Path = "/etc/cni/net.d",
    socket: str = spec.DEFAULT_AGENT_SOCKET,
    python: str = sys.executable,
    cni_version: str = CONFLIST_VERSION,
) -> Installed:
    """Write (atomically, idempotently) the launcher and the conflist; returns their paths."""
    binary = Path(bin_dir) / PLUGIN_NAME
    conf = Path(conf_dir) / CONFLIST_NAME
    text = json.dumps(conflist(socket, cni_version=cni_version), indent=2) + "\n"  # refused before writing
    _write_atomic(binary, launcher_script(python), 0o755)
    _write_atomic(conf, text, 0o644)
    return Installed(binary=binary, conflist=conf)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
