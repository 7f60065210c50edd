"""check_kernel_support against this machine's real kernel (vxlan present, the geneve driver absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podnet.config import load_config
from podnet.datapath.kernel.link import link_kind_supported
from podnet.datapath.support import check_kernel_support

pytestmark = pytest.mark.kernel


def test_vxlan_supported() -> None:
    assert os.geteuid() == 0
    check_kernel_support(load_config({"nodeName": "n", "tunnelProtocol": "vxlan"}))


@pytest.mark.skipif(Path("/sys/module/geneve").exists(), reason="this kernel has geneve")
def test_geneve_runs_without_the_geneve_driver() -> None:
    """Geneve is built in eBPF on a veth: no geneve driver needed (this kernel has none)."""
    assert link_kind_supported("geneve") is False
    check_kernel_support(load_config({"nodeName": "n", "tunnelProtocol": "geneve"}))
