"""What the lab writes into its Kubernetes API server: podnet's CRDs and RBAC (server-side apply,
as ``kubectl apply --server-side`` does), waiting until the CRDs are served."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from lightkube import Client, codecs
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from podnet.kube.client import connect

ESTABLISH_TIMEOUT = 30.0


class KubeObjectError(RuntimeError):
    """An object the lab writes was not accepted or not served in time."""


def apply_manifests(kubeconfig: Path, paths: Sequence[Path]) -> list[str]:
    """Apply every object of the YAML files; returns ``kind/name`` of each. CRDs are waited for
    until the API server serves them (condition Established)."""
    client = connect(kubeconfig)
    applied, crds = [], []
    try:
        for path in paths:
            for obj in codecs.load_all_yaml(path.read_text()):
                client.apply(obj, force=True)
                applied.append(f"{obj.kind}/{obj.metadata.name}")
                if isinstance(obj, CustomResourceDefinition):
                    crds.append(obj.metadata.name)
        for name in crds:
            wait_established(client, name)
    finally:
        client.close()
    return applied


def wait_established(client: Client, name: str, timeout: float = ESTABLISH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        crd = client.get(CustomResourceDefinition, name)
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            found = ", ".join(f"{c.type}={c.status} ({c.message})" for c in conditions) or "none"
            raise KubeObjectError(f"CRD {name} not established after {timeout:g}s; conditions: {found}")
        time.sleep(0.1)
