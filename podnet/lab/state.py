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


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` split after the command name: [0] is field 3 (state), [19] field 22."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_start_time(pid: int) -> int:
    """When ``pid`` started (clock ticks after boot, field 22 of /proc/PID/stat); 0 if it is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else 0
    except (IndexError, ValueError):
        return 0


@dataclass
class ProcessRecord:
    """A process the lab started: killed by PID, and only while it is still the same process.

    ``start_time`` (recorded at spawn, see ``LabState.add_process``) tells a reused PID from
    ours; records from state files written before it existed (0) fall back to the command line.
    """

    name: str
    pid: int
    netns: str
    argv: list[str]
    log: str = ""
    start_time: int = 0

    def running(self) -> bool:
        fields = _stat_fields(self.pid)
        if not fields or fields[0] == "Z":
            return False
        started_same = self.start_time != 0 and proc_start_time(self.pid) == self.start_time
        if self.start_time and not started_same:
            return False  # the PID now belongs to another process
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            return False
        if not any(cmdline):
            return started_same  # between fork and exec (or a kernel thread): only a start time tells
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
        """Record a process just spawned (its start time too, unless the caller gave one)."""
        if not rec.start_time:
            rec.start_time = proc_start_time(rec.pid)
        self.processes = [p for p in self.processes if p.name != rec.name] + [rec]
        self.save()

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    @classmethod
    def load(cls, lab: str) -> LabState | None:
        path = lab_dir(lab) / "state.json"
        try:
            data = json.loads(path.read_text())
            procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
            return cls(processes=procs, **data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError):
            return None  # corrupt: like a missing state (teardown finds the lab's namespaces by name)

    @classmethod
    def is_corrupt(cls, lab: str) -> bool:
        """A state file that exists but cannot be read (``podnet lab list`` shows it as such)."""
        return (lab_dir(lab) / "state.json").exists() and cls.load(lab) is None


def known_labs() -> list[str]:
    d = labs_dir()
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def remove_lab_dir(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
