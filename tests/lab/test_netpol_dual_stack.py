"""NetworkPolicy conformance (issue 28) in the world dual-stack-ipv6: dual stack with the IPv6
addresses probed, BPF host routing. The tests are netpolsuite.py's (truth tables from the oracle, a
mismatch probed once more); this file gives them their world, one lab for the whole module, so that
each world runs on a worker of its own."""

from __future__ import annotations

import pytest
from netpolsuite import BpfHostRoutingTests, NetpolTests, world_fixture

pytestmark = [pytest.mark.lab, pytest.mark.slow]  # slow: a tier of its own (README, "daily work")

world = world_fixture("dual-stack-ipv6")


class TestDualStackIPv6(NetpolTests, BpfHostRoutingTests):
    pass
