"""podnet's layers, checked on the real import graph (grimp, what import-linter builds on).

``lint-imports`` (scripts/test.sh) enforces the contracts in pyproject.toml; these tests read the
same layer list, show that it catches an upward import, and that no two packages import each
other through any chain (a package-level cycle), with the imports that make one.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def layers() -> list[grimp.Layer]:
    lines = contract("layers")["layers"]
    assert isinstance(lines, list)
    return [grimp.Layer(*(m.strip() for m in line.split("|")), independent=True) for line in lines]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("podnet", cache_dir=None)  # TYPE_CHECKING imports count, as in the contract


def packages(graph: grimp.ImportGraph) -> list[str]:
    return sorted(graph.find_children("podnet"))


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])  # podnet.lab.view -> podnet.lab


def package_imports(graph: grimp.ImportGraph) -> dict[tuple[str, str], list[str]]:
    """``{(package, package it imports): ["module:line imports module", ...]}`` among podnet's
    children; a package is its own module and every module below it."""
    found: dict[tuple[str, str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = package_of(importer), package_of(imported)
            if a != b and "podnet" not in (a, b):  # the root package itself holds only __version__
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = [d["line_number"] for d in details]
                found.setdefault((a, b), []).append(f"{importer}:{lines} imports {imported}")
    return found


def package_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """``{package: packages it imports}`` among podnet's children."""
    edges: dict[str, set[str]] = {p: set() for p in packages(graph)}
    for a, b in package_imports(graph):
        edges[a].add(b)
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the package graph, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(p: str) -> list[str] | None:
        state[p] = 1
        path.append(p)
        for q in sorted(edges[p]):
            if state.get(q) == 1:
                return [*path[path.index(q) :], q]
            if q not in state and (found := visit(q)):
                return found
        path.pop()
        state[p] = 2
        return None

    return next((c for p in sorted(edges) if p not in state and (c := visit(p))), None)


def test_every_package_has_a_layer(graph: grimp.ImportGraph) -> None:
    named = {f"podnet.{m}" for layer in layers() for m in layer.module_tails}
    assert set(packages(graph)) == named


def test_no_package_imports_upward(graph: grimp.ImportGraph) -> None:
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers(), containers={"podnet"})
    assert not illegal, sorted(f"{d.importer} -> {d.imported}" for d in illegal)


def test_an_upward_import_breaks_the_layers(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="podnet.verify.status", imported="podnet.lab.state")
    try:
        illegal = graph.find_illegal_dependencies_for_layers(layers=layers(), containers={"podnet"})
    finally:
        graph.remove_import(importer="podnet.verify.status", imported="podnet.lab.state")
    assert {(d.importer, d.imported) for d in illegal} == {("podnet.verify", "podnet.lab")}


def test_no_cycle_between_packages(graph: grimp.ImportGraph) -> None:
    found = cycle(package_edges(graph))
    if found:
        imports = package_imports(graph)
        why = [line for a, b in itertools.pairwise(found) for line in imports[(a, b)]]
        pytest.fail(f"import cycle {' -> '.join(found)}: {'; '.join(why)}")


def test_the_package_graph_sees_imports_of_modules_and_package_inits(graph: grimp.ImportGraph) -> None:
    edges = package_edges(graph)
    assert "podnet.verify" in edges["podnet.cli"]  # podnet/cli.py is a module, not a package
    assert "podnet.store" in edges["podnet.operator"]  # also imported by podnet/operator/__init__.py
    assert "podnet.lab" not in edges["podnet.verify"]


def test_the_cycle_check_finds_a_cycle() -> None:
    edges = {"agent": {"bgp"}, "bgp": {"config", "agent"}, "config": set()}
    assert cycle(edges) == ["agent", "bgp", "agent"]
    edges["bgp"] = {"config"}
    assert cycle(edges) is None
