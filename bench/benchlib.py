"""What the benchmarks share: percentiles as the tables print them, the JSON they write, and
bringing up several variants of one lab at once."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from podnet.lab.overrides import apply_overrides
from podnet.lab.run import bring_down, bring_up
from podnet.lab.topomodel import Topology
from podnet.lab.view import LabView


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by nearest rank (p50 of 100 values is the 50th smallest)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def stats(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in seconds, as milliseconds."""
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def write_json(path: str | Path, result: dict[str, Any]) -> Path:
    """Write the result (making its directory) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"json: {out}")
    return out


def perf_arguments(doc: str | None) -> argparse.Namespace:
    """``--repetitions`` (default 5) and ``--seconds`` (default 3) of an iperf3 benchmark."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else "")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    return parser.parse_args()


def labs_up(stack: contextlib.ExitStack, base: Topology, labs: Mapping[str, list[str]]) -> dict[str, LabView]:
    """``base`` up once per entry of ``labs`` (lab name: ``--set`` overrides), each brought down
    when ``stack`` closes (also on failure); their views by name."""
    views: dict[str, LabView] = {}
    for name, sets in labs.items():
        print(f"lab {name}: {base.name} {' '.join(sets)}", file=sys.stderr, flush=True)
        bring_down(name)
        stack.callback(bring_down, name)
        bring_up(apply_overrides(dataclasses.replace(base, name=name), sets))
        views[name] = stack.enter_context(LabView(name))
    return views
