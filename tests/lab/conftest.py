"""Lab fixtures: each test lab gets a unique name and is always torn down."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator

import pytest

from podnet.lab.run import bring_down, bring_up
from podnet.lab.topology import Topology


@pytest.fixture
def lab_up() -> Iterator[Callable[..., Topology]]:
    """lab_up(topology, cluster=True) brings it up under a unique lab name; teardown always runs."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root: run the README's test command as root")
    made: list[str] = []

    def up(topo: Topology, cluster: bool = True) -> Topology:
        name = f"t{secrets.token_hex(2)}-{topo.name}"[:16].rstrip("-")
        topo = dataclasses.replace(topo, name=name)
        made.append(name)
        bring_up(topo, cluster=cluster)
        return topo

    yield up
    for name in made:
        bring_down(name)
