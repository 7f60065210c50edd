"""Shared fixtures. Kernel tests make namespaces named ``pnt-<run>-<n>`` and always remove them."""

from __future__ import annotations

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


def _tier(item: pytest.Item) -> int:
    """How long a test's file usually takes, coarsely: slow lab tiers, other labs, kernel, unit."""
    parts = Path(str(item.path)).parts
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if "lab" in parts else 2 if "kernel" in parts else 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, so that with ``--dist loadfile`` the workers start them at once
    and the short ones fill the gaps at the end (in collection order, a slow tier that a worker
    took last kept the whole run waiting). Within a file the order stays as written."""
    tiers: dict[Path, int] = {}
    for item in items:
        path = Path(str(item.path))
        tiers[path] = min(tiers.get(path, 3), _tier(item))
    items.sort(key=lambda item: tiers[Path(str(item.path))])
