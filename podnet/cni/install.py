"""Install the podnet CNI plugin on a node: the ``podnet`` plugin and ``05-podnet.conflist``.

The plugin is the compiled one (``cniplugin/``, built by scripts/build-plugin.sh) when it was
built, else the Python launcher: a tiny script named after the conflist's plugin ``type`` that
runs this Python in isolated mode without ``site`` (``-I -S``) with only podnet's own directory on
``sys.path`` (the shim needs nothing but the standard library). Both are transports to the agent
and behave alike. Directories are parameters: tests install into ``tmp_path``, a real host uses
/opt/cni/bin and /etc/cni/net.d.
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


PLUGIN_KINDS = ("auto", "compiled", "python")


@dataclass(frozen=True)
class Installed:
    binary: Path
    conflist: Path
    kind: str  # compiled | python


def package_root() -> str:
    """The directory that holds the ``podnet`` package (a checkout or site-packages)."""
    import podnet

    return str(Path(podnet.__file__).resolve().parent.parent)


def compiled_plugin() -> Path:
    """Where scripts/build-plugin.sh installs the compiled plugin (``PODNET_PLUGIN_BINARY`` wins)."""
    override = os.environ.get("PODNET_PLUGIN_BINARY")
    return Path(override) if override else Path(sys.prefix) / "lib" / "podnet-plugin" / PLUGIN_NAME


def plugin_binaries() -> dict[str, Path]:
    """Both plugin binaries by kind: they behave alike, and the conformance tests run on both."""
    return {"compiled": compiled_plugin(), "python": Path(sys.executable).parent / "podnet-cni"}


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
    kind: str = "auto",
) -> Installed:
    """Write (atomically, idempotently) the plugin and the conflist; returns their paths. ``kind``
    auto takes the compiled plugin when it was built, else the Python launcher."""
    binary = Path(bin_dir) / PLUGIN_NAME
    conf = Path(conf_dir) / CONFLIST_NAME
    text = json.dumps(conflist(socket, cni_version=cni_version), indent=2) + "\n"  # refused before writing
    kind = plugin_kind(kind)
    if kind == "compiled":
        _write_atomic(binary, compiled_plugin().read_bytes(), 0o755)
    else:
        _write_atomic(binary, launcher_script(python).encode(), 0o755)
    _write_atomic(conf, text.encode(), 0o644)
    return Installed(binary=binary, conflist=conf, kind=kind)


def plugin_kind(kind: str) -> str:
    """``auto`` resolved; ``compiled`` when it was not built is an error saying how to build it."""
    if kind not in PLUGIN_KINDS:
        raise ValueError(f"plugin {kind!r} is not one of {', '.join(PLUGIN_KINDS)}")
    built = compiled_plugin().is_file()
    if kind == "compiled" and not built:
        raise ValueError(
            f"the compiled plugin {compiled_plugin()} was not built: run scripts/build-plugin.sh "
            "(needs Debian's golang-go) or install --plugin python"
        )
    if kind == "auto":
        kind = "compiled" if built else "python"
    if kind == "python" and os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise ValueError(
            f"in a pod, the Python launcher would name {sys.executable} inside the container's image, "
            "which the node's container runtime cannot run: install the compiled plugin (--plugin "
            "compiled; podnet's image has it, scripts/build-plugin.sh builds it)"
        )
    return kind


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
