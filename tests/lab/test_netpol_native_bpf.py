"""NetworkPolicy conformance (issue 28) in the world native-bpf-host-routing: native routing, direct
node routes, BPF host routing. The tests are netpolsuite.py's (truth tables from the oracle, a
mismatch probed once more); this file gives them their world, one lab for the whole module, so that
each world runs on a worker of its own."""

from __future__ import annotations

import pytest
from netpolsuite import BpfHostRoutingTests, NetpolTests, world_fixture

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

world = world_fixture("native-bpf-host-routing")


class TestNativeBpfHostRouting(NetpolTests, BpfHostRoutingTests):
    pass
