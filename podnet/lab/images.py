"""Container images the lab's real Kubernetes nodes run, made here without a registry.

Each image is one layer in a docker-archive tarball (``manifest.json``, the config, the layer),
which ``ctr images import`` reads: ``pause`` (the pod sandbox's one process, built from the
Kubernetes source by scripts/build-kube.sh) and ``busybox`` (Debian's busybox-static with one
symlink per applet, for workloads: sh, sleep, httpd, wget, nc). Tarballs are byte-for-byte
reproducible (fixed mtimes, sorted entries) and cached under ``<cache>/images/`` by the digest of
what went in, so a second lab start only imports them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

MTIME = 1_700_000_000
PAUSE = "podnet.lab/pause:v1.20.2"
BUSYBOX = "podnet.lab/busybox:1"
BUSYBOX_BINARY = Path("/bin/busybox")


class ImageError(RuntimeError):
    """An image could not be made; the message names the missing input and what provides it."""


@dataclass(frozen=True)
class Image:
    name: str  # the reference pods use, e.g. podnet.lab/busybox:1
    path: Path  # the docker-archive tarball


def cache_dir() -> Path:
    return Path(os.environ.get("PODNET_CACHE", "/var/cache/podnet")) / "images"


def entry(
    name: str, mode: int, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size, info.linkname = kind, mode, MTIME, size, link
    info.uname = info.gname = "root"
    return info


def layer(files: dict[str, bytes], dirs: tuple[str, ...] = (), links: dict[str, str] | None = None) -> bytes:
    """One layer tarball: ``dirs``, then ``files`` (mode 0755 when under bin/ or named pause),
    then symlinks ``{path: target}``, each in sorted order (pure)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(entry(d, 0o1777 if d == "tmp" else 0o755, tarfile.DIRTYPE))
        for name in sorted(files):
            mode = 0o755 if name.startswith("bin/") or name == "pause" else 0o644
            tar.addfile(entry(name, mode, size=len(files[name])), io.BytesIO(files[name]))
        for name, target in sorted((links or {}).items()):
            tar.addfile(entry(name, 0o777, tarfile.SYMTYPE, link=target))
    return buf.getvalue()


def archive(name: str, layer_tar: bytes, config: dict[str, object]) -> bytes:
    """A docker-archive of one layer tagged ``name`` (pure)."""
    diff = hashlib.sha256(layer_tar).hexdigest()
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
        "history": [{"created_by": "podnet.lab.images"}],
    }
    blob = json.dumps(doc, sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()
    manifest = json.dumps([{"Config": f"{digest}.json", "RepoTags": [name], "Layers": [f"{diff}/layer.tar"]}])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(entry(diff, 0o755, tarfile.DIRTYPE))
        for path, data in ((f"{diff}/layer.tar", layer_tar), (f"{digest}.json", blob),
                           ("manifest.json", manifest.encode())):  # fmt: skip
            tar.addfile(entry(path, 0o644, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def _cached(name: str, data: bytes) -> Image:
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name.split('/')[-1].replace(':', '-')}-{hashlib.sha256(data).hexdigest()[:12]}.tar"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)
    return Image(name, path)


def pause_image(pause: Path) -> Image:
    if not os.access(pause, os.X_OK):
        raise ImageError(f"{pause} is missing: run `bash scripts/build-kube.sh` (it builds pause)")
    data = archive(PAUSE, layer({"pause": pause.read_bytes()}), {"Entrypoint": ["/pause"]})
    return _cached(PAUSE, data)


def busybox_image(binary: Path = BUSYBOX_BINARY) -> Image:
    if not os.access(binary, os.X_OK):
        raise ImageError(f"{binary} is missing: install Debian's busybox-static (scripts/runtime-tools.sh)")
    applets = subprocess.run(
        [str(binary), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    files = {
        "bin/busybox": binary.read_bytes(),
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    }
    links = {f"bin/{a}": "busybox" for a in applets if a != "busybox"}
    dirs = ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "var", "www")
    config = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    return _cached(BUSYBOX, archive(BUSYBOX, layer(files, dirs, links), config))
