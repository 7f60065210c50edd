"""Shared fixtures. Kernel tests make namespaces named ``pnt-<run>-<n>`` and always remove them."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podnet.cni import install
from podnet.util import netns

TEST_PREFIX = "pnt-"


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], str]]:
    """Returns make(label) -> namespace name; every namespace made is removed at teardown."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the README's test command as root")
    run = secrets.token_hex(3)
    made: list[str] = []

    def make(label: str) -> str:
        name = f"{TEST_PREFIX}{run}-{label}"
        made.append(name)
        netns.create(name)
        return name

    yield make
    for name in reversed(made):
        netns.remove(name)


PLUGINS = install.plugin_binaries()


@pytest.fixture(params=sorted(PLUGINS))
def plugin(request: pytest.FixtureRequest) -> Path:
    """Each CNI plugin binary in turn (compiled, Python): tests that take it run on both."""
    path = PLUGINS[request.param]
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/setup.sh (it builds the compiled plugin)")
    return path


FILE_SECONDS = Path(__file__).with_name("file_seconds.json")  # scripts/test-weights.py writes it


def _guess(item: pytest.Item) -> float:
    """A file's seconds when it has not been measured yet, coarsely by tier: slow lab tiers, other
    labs, kernel, unit."""
    parts = Path(str(item.path)).parts
    if item.get_closest_marker("slow") is not None:
        return 300.0
    return 60.0 if "lab" in parts else 5.0 if "kernel" in parts else 1.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, so that with ``--dist loadfile`` the workers start them at once
    and the short ones fill the gaps at the end (in collection order, a slow file that a worker
    took last kept the whole run waiting). How long a file takes is what the last measured run
    says (``tests/file_seconds.json``, from ``scripts/test-weights.py``), else a guess by tier.
    Within a file the order stays as written."""
    measured: dict[str, float] = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.exists() else {}
    root = Path(__file__).parent.parent
    seconds: dict[Path, float] = {}
    for item in items:
        path = Path(str(item.path))
        known = measured.get(str(path.relative_to(root))) if path.is_relative_to(root) else None
        seconds[path] = max(seconds.get(path, 0.0), known if known is not None else _guess(item))
    items.sort(key=lambda item: -seconds[Path(str(item.path))])
