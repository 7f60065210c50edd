"""What every part of the demo is made of: steps that compare what happened with what should
happen, and a fresh lab per scene that is torn down afterwards."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Pod, load_topology
from podnet.lab.view import LabView


@dataclass(frozen=True)
class Step:
    title: str
    ok: bool
    expected: bool
    detail: str

    @property
    def as_expected(self) -> bool:
        return self.ok == self.expected


@dataclass
class Part:
    """One chapter of the story: its steps and the Markdown it adds to the report."""

    title: str
    steps: list[Step] = field(default_factory=list)
    markdown: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # how long the part took, its labs' set-up and teardown included

    def step(self, title: str, ok: bool, expected: bool, detail: str) -> None:
        self.steps.append(Step(title, ok, expected, detail))


def say(msg: str) -> None:
    print(f"  - {msg}", file=sys.stderr, flush=True)


@contextmanager
def lab(
    topology: str,
    name: str,
    sets: list[str],
    args: argparse.Namespace,
    extra_pods: tuple[Pod, ...] = (),
) -> Iterator[LabView]:
    """A fresh lab ``name`` from ``topology`` with ``--set`` overrides (and the demo's datastore)
    and ``extra_pods``, torn down at the end unless ``--keep``."""
    keep = bool(args.keep)
    if getattr(args, "datastore", "etcd") != "etcd" and not any(s.startswith("datastore=") for s in sets):
        sets = [*sets, f"datastore={args.datastore}"]
    base = load_topology(topology)
    topo = apply_overrides(dataclasses.replace(base, name=name, pods=(*base.pods, *extra_pods)), sets)
    bring_down(name)  # a leftover of an interrupted demo must not mix in
    say(f"lab {name}: {topology} {' '.join(sets)}".rstrip())
    try:
        bring_up(topo)
        with LabView(name) as view:
            yield view
    finally:
        if not keep:
            bring_down(name)
