"""nftables through the ``nft`` program, in the calling process's network namespace only.

``apply_script`` runs one ``nft -f -`` transaction (all of it applies or none of it does);
``list_table`` reads a table back for status. Only podnet's tables (``owned.NFT_TABLE``,
``owned.GUARD_TABLE``) are ever touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from podnet import owned


class NftError(RuntimeError):
    """nft refused a ruleset; the message carries nft's own words."""


def nft_binary() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise NftError("nft not found: install the Debian package nftables")
    return found


def apply_script(script: str) -> None:
    res = subprocess.run([nft_binary(), "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise NftError(f"nft rejected podnet's table: {res.stderr.strip()}")


def list_table(table: str = owned.NFT_TABLE, family: str = "ip") -> dict[str, Any] | None:
    """The table as nft's JSON, or None when it does not exist."""
    res = subprocess.run(
        [nft_binary(), "-j", "list", "table", family, table], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        return None
    return json.loads(res.stdout)
