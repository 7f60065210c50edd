"""What a lab made, kept under ``/run/podnet/labs/<lab>/``: namespaces, processes, the topology.

The state is written *before* each thing is created (write-ahead), so that ``lab down`` finds
everything a crashed ``lab up`` left behind. Namespaces are named ``pn-<lab>-<host>``; the
``pn-`` prefix is how ``lab down --all`` finds leftovers of labs whose state is gone.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NS_PREFIX = "pn-"
RUN_ROOT = Path(os.environ.get("PODNET_RUN_DIR", "/run/podnet"))


def labs_dir() -> Path:
    return RUN_ROOT / "labs"


def lab_dir(lab: str) -> Path:
    return labs_dir() / lab


def ns_name(lab: str, host: str) -> str:
    """The namespace of one lab host (``pn-two-subnets-node1``)."""
    return f"{NS_PREFIX}{lab}-{host}"


def segment_ns(lab: str, network: str) -> str:
    return ns_name(lab, f"sw-{network}")


@dataclass
class ProcessRecord:
    """A process the lab started: killed by PID, and only while it still runs the same command."""

    name: str
    pid: int
    netns: str
    argv: list[str]
    log: str = ""

    def running(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1][0]
        except (FileNotFoundError, IndexError):
            return False
        if state == "Z":
            return False
        if not any(cmdline):
            return True  # between fork and exec: nothing to compare yet
        exe = os.path.basename(self.argv[0]) if self.argv else ""
        # right after spawn the process may still be "ip netns exec <ns> <program> ..."
        return any(os.path.basename(c.decode(errors="replace")) == exe for c in cmdline[:6])


@dataclass
class LabState:
    name: str
    fingerprint: str
    source: str
    status: str = "building"  # building | up | failed
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return lab_dir(self.name) / "state.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def add_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces.append(name)
            self.save()

    def add_process(self, rec: ProcessRecord) -> None:
        self.processes = [p for p in self.processes if p.name != rec.name] + [rec]
        self.save()

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    @classmethod
    def load(cls, lab: str) -> LabState | None:
        path = lab_dir(lab) / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return cls(name=lab, fingerprint="", source="", status="failed")
        procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return cls(processes=procs, **data)


def known_labs() -> list[str]:
    d = labs_dir()
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def remove_lab_dir(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
