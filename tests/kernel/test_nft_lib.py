"""podnet.datapath.kernel.nft in process (libnftables): the namespace it acts in, errors, atomicity."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from podnet.datapath.kernel import nft
from podnet.util import netns

pytestmark = pytest.mark.kernel

TABLE = "add table inet pnt_libtest\nadd set inet pnt_libtest seen { type ipv4_addr; }\n"


def listed(ns: str | None) -> str:
    cmd = ["nft", "list", "tables"] if ns is None else ["ip", "netns", "exec", ns, "nft", "list", "tables"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout


def test_the_library_is_used_and_acts_in_the_threads_namespace(netns_factory: Callable[[str], str]) -> None:
    assert nft._LIB is not None, "libnftables1 is missing (Debian nftables depends on it)"
    one, two = netns_factory("nfta"), netns_factory("nftb")
    with netns.entered(one):
        nft.apply_script(TABLE)
    assert "pnt_libtest" in listed(one)
    assert "pnt_libtest" not in listed(two)
    assert "pnt_libtest" not in listed(None)  # never the machine's own namespace
    with netns.entered(two):  # a second namespace gets its own context, not the first one's socket
        nft.apply_script("add table inet pnt_libtest2\n")
    assert "pnt_libtest2" in listed(two) and "pnt_libtest2" not in listed(one)


def test_a_refused_script_raises_with_nfts_words_and_changes_nothing(
    netns_factory: Callable[[str], str],
) -> None:
    ns = netns_factory("nftc")
    with netns.entered(ns):
        with pytest.raises(nft.NftError, match="rejected") as info:
            nft.apply_script("add table inet pnt_half\nadd set inet pnt_half s { type nosuchtype; }\n")
        assert "nosuchtype" in str(info.value) or "Error" in str(info.value)
    assert "pnt_half" not in listed(ns)  # one transaction: the table was not made either
