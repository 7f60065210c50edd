"""Real CNI clients for the runtime tier: the upstream cnitool and podman with its CNI backend.

Both come from scripts/runtime-tools.sh (cnitool built from Debian's source package). Nothing
they do reaches the machine's own configuration: cnitool's result cache and podman's whole state
(storage, runc root, CNI config and plugin directories) live in the test's work directory, and
podman runs in a private mount namespace, inside a lab node's network namespace, with tmpfs over
/run/netns and /var/lib/cni, so the container namespaces it pins and libcni's result cache
vanish with it. That private mount namespace is also what makes the agent unable to see
CNI_NETNS: the plugin must open it and pass the descriptor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from podnet.lab import cluster as cl
from podnet.lab import state as st

REPO = Path(__file__).resolve().parents[2]


def tools() -> dict[str, str]:
    """``cnitool=...`` etc. as scripts/runtime-tools.sh prints them (it installs and builds what
    is missing; on a machine that ran it once it takes a tenth of a second)."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "runtime-tools.sh")], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, f"scripts/runtime-tools.sh failed: {proc.stderr[-2000:]}"
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)
    for key in ("cnitool", "podman", "runc", "busybox", "cni-plugins"):
        assert key in found, f"scripts/runtime-tools.sh did not say where {key} is: {proc.stdout}"
    return found


def conflist(lab: str, node: str, name: str) -> dict[str, object]:
    """The conflist a runtime on ``node`` reads: podnet's plugin, that node's agent, cniVersion
    1.0.0 as ``podnet install-cni`` writes it."""
    from podnet.cni.install import conflist as installed

    return installed(str(cl.agent_socket(lab, node)), network=name)


@dataclass
class Cnitool:
    binary: str
    node_ns: str
    conf_dir: Path
    cache_dir: Path
    bin_dir: Path

    def __call__(
        self, command: str, network: str, pod_ns: str, ifname: str = "eth0"
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "NETCONFPATH": str(self.conf_dir),
            "CNI_PATH": str(self.bin_dir),
            "CNI_CACHE_DIR": str(self.cache_dir),
            "CNI_IFNAME": ifname,
        }
        argv = ["ip", "netns", "exec", self.node_ns, self.binary, command, network, f"/run/netns/{pod_ns}"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def make_cnitool(binary: str, lab: str, node: str, work: Path, networks: tuple[str, ...]) -> Cnitool:
    conf_dir, cache_dir = work / "cnitool-net.d", work / "cnitool-cache"
    conf_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name in networks:
        (conf_dir / f"{name}.conflist").write_text(json.dumps(conflist(lab, node, name)))
    return Cnitool(binary, st.ns_name(lab, node), conf_dir, cache_dir, cl.cni_bin_dir(lab))


# ---- podman --------------------------------------------------------------------------------------

# Runs inside `<launch> unshare --mount --propagation private bash -c SCRIPT`: everything podman
# pins or caches stays in this mount namespace. `ip netns exec` remounts /sys, which hides the
# cgroup hierarchies runc needs: they are mounted again here (cgroup2 or the v1 controllers).
PODMAN_PRELUDE = r"""
set -euo pipefail
mount -t tmpfs pnt-rt-netns /run/netns
mount -t tmpfs pnt-rt-cni /var/lib/cni
if [ -z "$(ls -A /sys/fs/cgroup 2>/dev/null)" ]; then
  if [ "$CGSPEC" = cgroup2 ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup; else
    mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    for s in $CGSPEC; do d=${s%%:*} o=${s#*:}; mkdir -p /sys/fs/cgroup/$d
      if [ "$o" = cgroup2 ]; then mount -t cgroup2 cgroup2 /sys/fs/cgroup/$d
      else mount -t cgroup -o "$o" cgroup /sys/fs/cgroup/$d; fi
    done
  fi
fi
export CONTAINERS_CONF=$W/containers.conf CONTAINERS_STORAGE_CONF=$W/storage.conf
RUN=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
ROOTFS=(--rootfs "$W/rootfs")  # a flag without a value: the path is the image argument, then the command
"""


def cgroup_spec() -> str:
    """What PODMAN_PRELUDE mounts again after `ip netns exec` remounted /sys."""
    if (
        subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
        == "cgroup2fs"
    ):
        return "cgroup2"
    specs = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if len(fields) < 5 or not fields[4].startswith("/sys/fs/cgroup/") or not rest:
            continue
        sub = fields[4][len("/sys/fs/cgroup/") :]
        opts = (
            "cgroup2"
            if rest[0] == "cgroup2"
            else ",".join(o for o in rest[2].split(",") if o not in ("rw", "ro"))
        )
        specs.append(f"{sub}:{opts}")
    return " ".join(specs)


@dataclass
class Podman:
    work: Path
    node_ns: str
    binary: str

    def script(
        self, body: str, launch: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``body`` (bash, after PODMAN_PRELUDE) in one private mount namespace inside the
        node's network namespace, entered by ``launch``: ``nsenter`` or ``ip-netns-exec``."""
        enter = (
            ["nsenter", f"--net=/run/netns/{self.node_ns}", "--"]
            if launch == "nsenter"
            else ["ip", "netns", "exec", self.node_ns]
        )
        argv = [*enter, "unshare", "--mount", "--propagation", "private", "bash", "-c", PODMAN_PRELUDE + body]
        full = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "W": str(self.work),
                "CGSPEC": cgroup_spec(), **(env or {})}  # fmt: skip
        return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=600)

    def cleanup(self) -> None:
        """Remove every container of this work directory, then kill by PID what still runs from it."""
        self.script("podman rm -f -t 0 --all >/dev/null 2>&1 || true\n", "nsenter")
        marker = f"{self.work}/".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


def make_podman(tool: dict[str, str], lab: str, node: str, work: Path, networks: tuple[str, ...]) -> Podman:
    """podman's private world in ``work``: containers.conf (CNI backend, podnet's plugin dir and a
    config dir with only podnet's networks), storage, a runc with its own root, a busybox rootfs."""
    conf_dir = work / "net.d"
    for d in (
        conf_dir,
        work / "root",
        work / "runroot",
        work / "tmp",
        work / "volumes",
        work / "runc",
        work / "bin",
    ):
        d.mkdir(parents=True, exist_ok=True)
    for name in networks:
        (conf_dir / f"{name}.conflist").write_text(json.dumps(conflist(lab, node, name)))
    rootfs = work / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "bin" / "busybox").write_bytes(Path(tool["busybox"]).read_bytes())
    (rootfs / "bin" / "busybox").chmod(0o755)
    runc = work / "bin" / "runc"
    runc.write_text(f'#!/bin/sh\nexec {tool["runc"]} --root "{work}/runc" "$@"\n')
    runc.chmod(0o755)
    (work / "containers.conf").write_text(
        "[network]\n"
        'network_backend = "cni"\n'
        f'cni_plugin_dirs = ["{cl.cni_bin_dir(lab)}"]\n'
        f'network_config_dir = "{conf_dir}"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        'runtime = "runc"\n'
        f'tmp_dir = "{work}/tmp"\n'
        f'volume_path = "{work}/volumes"\n'
        "[engine.runtimes]\n"
        f'runc = ["{runc}"]\n'
    )
    (work / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{work}/root"\nrunroot = "{work}/runroot"\n'
    )
    return Podman(work, st.ns_name(lab, node), tool["podman"])
