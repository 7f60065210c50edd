"""The podnet CLI with out-of-tree plugins loaded (``PODNET_PLUGINS``, tests/plugins on the path),
as a user who installed a plugin runs it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from podnet.lab.topology import load_topology

PLUGINS = Path(__file__).parents[1] / "plugins"
PODNET = str(Path(sys.executable).with_name("podnet"))


def plugin_env(*modules: str) -> dict[str, str]:
    return {**os.environ, "PODNET_PLUGINS": ",".join(modules), "PYTHONPATH": str(PLUGINS)}


def run_podnet(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([PODNET, *args], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == code, (
        f"podnet {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    )
    return res


def podnet_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    return json.loads(run_podnet(env, *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def l2_lab_file(
    folder: Path, suffix: str, pods: int | None = None, ipam_mode: str | None = None
) -> tuple[str, Path]:
    """examples/l2.yaml under a lab name of its own (``t<hex>-<suffix>``) in ``folder``: ``pods``
    per node, the cluster's ``ipam.mode``; its name and path."""
    name = f"t{secrets.token_hex(2)}-{suffix}"
    doc = yaml.safe_load(Path(str(load_topology("l2").source)).read_text())
    doc["name"] = name
    if pods is not None:
        doc["pods"] = [{"count": pods}]
    if ipam_mode is not None:
        doc["cluster"]["ipam"]["mode"] = ipam_mode
    path = folder / f"{suffix}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return name, path
