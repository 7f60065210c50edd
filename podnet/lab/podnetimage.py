"""podnet's own container image (``podnet:<version>``, what deploy/kubernetes/ names), built
offline from the Debian archive and this checkout, without a registry or a container builder.

What goes in, in one layer:

- Debian packages, unpacked: python3 and the tools the agent runs (``ip``, ``tc``, ``nft``,
  ``bpftool``, ``ping``), with their dependencies as apt resolves them for an empty system (the
  machine's package lists, a private empty dpkg status: nothing on the machine changes), fetched
  with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no maintainer scripts run);
- podnet and its runtime dependencies, installed by pip into the image's ``dist-packages``;
- the compiled CNI plugin at ``/usr/lib/podnet-plugin/podnet`` (where ``install-cni`` looks when
  the image's Python is ``/usr/bin/python3``) and the eBPF objects compiled for every program,
  under ``/var/cache/podnet/bpf`` (the agent needs no clang).

The tarball is cached under ``<cache>/images/`` by a digest of its inputs (package versions,
podnet's sources, the plugin), so a second build only finds it. ``scripts/build-image.sh`` builds
it; ``podnet lab up`` with ``install: manifests`` builds it when missing and imports it into each
real node's containerd.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import podnet
from podnet.lab import images

NAME = f"podnet:{podnet.__version__}"
# netbase: /etc/protocols and /etc/services, without which nft cannot name "tcp" or "udp"
PACKAGES = ("python3", "iproute2", "nftables", "bpftool", "iputils-ping", "dash", "netbase")
SITE = "usr/lib/python3/dist-packages"  # on Debian's sys.path, whatever python3.X the image has
PLUGIN = "usr/lib/podnet-plugin/podnet"
BPF_CACHE = "var/cache/podnet/bpf"
LAUNCHER = b"#!/usr/bin/python3\nimport sys\nfrom podnet.cli import main\nsys.exit(main())\n"
LINKS = {"bin/sh": "dash", "usr/bin/python": "python3"}  # what maintainer scripts would make


class ImageBuildError(images.ImageError):
    """The podnet image could not be built; the message names the step, its log and the fix."""


def parse_simulation(text: str) -> list[str]:
    """``name=version`` of every ``Inst`` line of ``apt-get -s install`` (pure)."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "Inst" and parts[2].startswith("("):
            found.append(f"{parts[1]}={parts[2][1:]}")
    return found


def package_closure(packages: Sequence[str] = PACKAGES) -> list[str]:
    """What apt would install on an empty system for ``packages`` (no recommends), read from the
    machine's package lists with a private, empty dpkg status."""
    with tempfile.NamedTemporaryFile(prefix="podnet-image-status-") as status:
        argv = ["apt-get", "-s", "-q", "-o", f"Dir::State::status={status.name}", "-o", "Debug::NoLocking=1",
                "install", "--no-install-recommends", *packages]  # fmt: skip
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = parse_simulation(res.stdout)
    if res.returncode != 0 or not found:
        raise ImageBuildError(
            f"apt cannot resolve {' '.join(packages)} for the image: {res.stderr.strip()[-400:]}; "
            "run `apt-get update` (scripts/setup.sh does)"
        )
    return sorted(found)


def source_files(root: Path) -> list[Path]:
    """podnet's files that go into the image (the package and its build description)."""
    files = [root / "pyproject.toml"]
    for path in sorted((root / "podnet").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files.append(path)
    return files


def inputs_digest(closure: Iterable[str], sources: Iterable[Path], root: Path, plugin: bytes) -> str:
    """What the image is made of, as one hash: the tarball's cache key (pure but for reading)."""
    h = hashlib.sha256()
    h.update("\n".join(closure).encode())
    for path in sources:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    h.update(hashlib.sha256(plugin).digest())
    return h.hexdigest()[:16]


def _run(argv: Sequence[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        res = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, check=False)
    if res.returncode != 0:
        raise ImageBuildError(f"`{' '.join(argv[:3])} ...` failed (exit {res.returncode}): see {log}")


def _deb_version(path: Path) -> str:
    res = subprocess.run(
        ["dpkg-deb", "-f", str(path), "Version"], capture_output=True, text=True, check=False
    )
    return res.stdout.strip()


def _download(closure: Sequence[str], debs: Path, log: Path) -> list[Path]:
    """The ``.deb`` file of each ``name=version`` of ``closure``, downloaded once into ``debs``
    (kept across builds: a new podnet needs no download)."""
    debs.mkdir(parents=True, exist_ok=True)

    def find(spec: str) -> Path | None:
        name, version = spec.split("=", 1)
        return next((d for d in sorted(debs.glob(f"{name}_*.deb")) if _deb_version(d) == version), None)

    missing = [s for s in closure if find(s) is None]
    if missing:
        if _has_user("_apt"):
            shutil.chown(debs, user="_apt")  # apt-get download drops to the _apt user
        _run(["apt-get", "-q", "download", *missing], log, cwd=debs)
    found = [find(s) for s in closure]
    lost = [s for s, f in zip(closure, found, strict=True) if f is None]
    if lost:
        raise ImageBuildError(f"apt-get download did not leave {', '.join(lost)} in {debs}: see {log}")
    return [f for f in found if f is not None]


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _bpf_objects() -> list[Path]:
    """Every eBPF object the agent may attach, compiled by this machine's clang (cached)."""
    from podnet.datapath import hostrouting
    from podnet.datapath.bpf import build
    from podnet.datapath.tunnels import all_protocols

    programs = [(hostrouting.SOURCE, hostrouting.VARIANT)]
    programs += [obj for protocol in all_protocols() for obj in protocol.bpf_objects()]
    return [build.compiled(source, variant) for source, variant in programs]


def _rootfs(rootfs: Path, debs: Sequence[Path], root: Path, plugin: Path, log: Path) -> None:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(rootfs)], log)
    for link, target in LINKS.items():
        path = rootfs / link
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
    site = rootfs / SITE
    src = rootfs.parent / "src"  # a copy: setuptools would leave build/ and *.egg-info in the checkout
    for path in source_files(root):
        dest = src / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--no-warn-script-location",
           "--target", str(site), str(src)]  # fmt: skip
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run(pip, log, env=env)
    shutil.rmtree(site / "bin", ignore_errors=True)  # pip's console scripts name the build's Python
    launcher = rootfs / "usr/bin/podnet"
    launcher.write_bytes(LAUNCHER)
    launcher.chmod(0o755)
    dest = rootfs / PLUGIN
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plugin, dest)
    dest.chmod(0o755)
    bpf = rootfs / BPF_CACHE
    bpf.mkdir(parents=True, exist_ok=True)
    for obj in _bpf_objects():
        shutil.copyfile(obj, bpf / obj.name)
    for d in ("proc", "sys", "dev", "tmp", "run", "var/run/podnet", "var/lib/podnet", "etc/podnet"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def _add_tree(tar: tarfile.TarFile, rootfs: Path) -> None:
    """The tree in sorted order, owned by root, with fixed times (a reproducible layer)."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = images.MTIME
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _pack(rootfs: Path, out: Path) -> None:
    """A docker-archive of ``rootfs`` as one layer, written to ``out`` (``ctr images import``)."""
    layer = out.with_suffix(".layer.tar")
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, rootfs)
    h = hashlib.sha256()
    with layer.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    diff = h.hexdigest()
    config = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["podnet", "--help"],
        "Labels": {"org.opencontainers.image.title": "podnet"},
    }
    doc = {"architecture": "amd64", "os": "linux", "config": config,
           "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
           "history": [{"created_by": "podnet.lab.podnetimage"}]}  # fmt: skip
    blob = json.dumps(doc, sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()
    manifest = json.dumps([{"Config": f"{digest}.json", "RepoTags": [NAME], "Layers": [f"{diff}/layer.tar"]}])
    with tarfile.open(out, "w") as tar:
        tar.addfile(images.entry(diff, 0o755, tarfile.DIRTYPE))
        tar.add(str(layer), arcname=f"{diff}/layer.tar", filter=_fixed)
        for path, data in ((f"{digest}.json", blob), ("manifest.json", manifest.encode())):
            tar.addfile(images.entry(path, 0o644, size=len(data)), io.BytesIO(data))
    layer.unlink()


def _fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = images.MTIME
    return info


def repo_root() -> Path:
    root = Path(podnet.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise ImageBuildError(
            f"{root} is not a podnet checkout (no pyproject.toml): build the image from one"
        )
    return root


def ensure(log: Path | None = None) -> images.Image:
    """The image tarball, built when its inputs changed since the cached one."""
    from podnet.cni.install import compiled_plugin

    root = repo_root()
    plugin = compiled_plugin()
    if not plugin.is_file():
        raise ImageBuildError(f"the compiled CNI plugin {plugin} is missing: run scripts/build-plugin.sh")
    closure = package_closure()
    key = inputs_digest(closure, source_files(root), root, plugin.read_bytes())
    cache = images.cache_dir()
    out = cache / f"podnet-{podnet.__version__}-{key}.tar"
    if out.exists():
        return images.Image(NAME, out)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="podnet-image-", dir=cache))
    log = log or cache / "podnet-image.log"
    log.write_text("")
    try:
        debs = _download(closure, cache.parent / "image-debs", log)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _rootfs(rootfs, debs, root, plugin, log)
        tmp = work / "image.tar"
        _pack(rootfs, tmp)
        for old in cache.glob(f"podnet-{podnet.__version__}-*.tar"):
            old.unlink()  # one podnet image is kept: the current one
        tmp.replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return images.Image(NAME, out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m podnet.lab.podnetimage", description=__doc__.splitlines()[0]
    )
    parser.parse_args(argv)
    try:
        image = ensure()
    except images.ImageError as exc:
        print(f"build-image: {exc}", file=sys.stderr)
        return 1
    print(f"{image.name} {image.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
