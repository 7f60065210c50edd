"""Tearing a real node down walks its cgroup tree while kubelet and containerd are still removing
pods' cgroups: a directory that vanishes in the middle of the walk must not stop the teardown (CI
of 2026-12-06 failed in remove_cgroups with FileNotFoundError on a container's cgroup)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podnet.lab import kubenode


def _tree(root: Path) -> Path:
    gone = root / "kubepods" / "besteffort" / "pod1" / "c1"
    gone.mkdir(parents=True)
    (gone / "cgroup.procs").write_text("111\n")
    kept = root / "kubepods" / "burstable" / "pod2"
    kept.mkdir(parents=True)
    (kept / "cgroup.procs").write_text("222\n")
    (root / "cgroup.procs").write_text("")
    return gone


def test_a_cgroup_removed_during_the_walk_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = _tree(tmp_path)
    real = os.scandir

    def racing(path: object = ".") -> object:
        if Path(os.fspath(path)) == gone:  # type: ignore[arg-type]
            raise FileNotFoundError(2, "No such file or directory", os.fspath(path))  # type: ignore[arg-type]
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", racing)
    assert kubenode._procs_below(tmp_path) == {222}


def test_remove_cgroups_removes_the_tree_deepest_first(tmp_path: Path) -> None:
    _tree(tmp_path)
    for procs in tmp_path.rglob("cgroup.procs"):
        procs.unlink()  # a plain directory tree cannot rmdir with files in it; cgroupfs can
    assert kubenode.remove_cgroups([str(tmp_path)], grace=0.1) == []
    assert not tmp_path.exists()
