"""The Kubernetes API client podnet uses: lightkube, from a kubeconfig or the pod's service account.

Why lightkube (measured on this machine, docs/kubernetes.md): it imports in ~0.13-0.22 s where the
official ``kubernetes`` client takes ~0.7-1.7 s (``kr8s`` ~0.37 s, async only at heart;
``kubernetes-asyncio`` ~0.3 s, async only); it has a synchronous client that fits the agent's
threads, typed models for core objects and generic ones for podnet's CRDs, and its watch exposes
each event's resourceVersion. Its own 410 handling restarts a watch without a relist, which
misses deletions: ``podnet.kube.watch`` lists and watches itself.

Settings with Cilium's names: ``k8sKubeconfigPath`` (``--k8s-kubeconfig-path``) and, in a pod, the
service account's token (in-cluster), as Cilium's agent does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import httpx2 as httpx
import msgspec
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ConfigError

DEFAULT_TIMEOUT = 10.0
FIELD_MANAGER = "podnet"
# one INFO line per HTTP request (a watch, every poll) drowned the agent's and operator's own logs
logging.getLogger("httpx2").setLevel(logging.WARNING)


class KubeConnectError(RuntimeError):
    """No usable Kubernetes client configuration; the message says which one was tried."""


_WARM_LOCK = threading.Lock()
_warmed = False


def warm_models() -> None:
    """Build msgspec's decoding info for every Kubernetes model podnet decodes, once, in one thread.

    Design fact (measured here): msgspec (0.22) builds a class's decoding info the first time it
    converts to it, and two threads doing that at once crash the process with SIGSEGV: an agent's
    two watch threads decoding their first ObjectMeta together killed it in about one lab start in
    ten. After this has run, concurrent decoding only reads that info."""
    global _warmed
    with _WARM_LOCK:
        if _warmed:
            return
        from lightkube.models.meta_v1 import ListMeta, ObjectMeta, Status
        from lightkube.resources.core_v1 import Namespace, Node, Pod, ServiceAccount

        for model in (ObjectMeta, ListMeta, Status, Node, Pod, Namespace, ServiceAccount):
            with contextlib.suppress(msgspec.ValidationError):  # required fields missing: built all the same
                msgspec.convert({}, model)
        _warmed = True


def connect(kubeconfig: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A client from ``kubeconfig`` (a path), else from the pod's service account."""
    warm_models()
    try:
        config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else KubeConfig.from_service_account()
    except (ConfigError, OSError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
        raise KubeConnectError(
            f"cannot configure the Kubernetes client from {where}: {exc}; set k8sKubeconfigPath "
            "(--k8s-kubeconfig-path) to a readable kubeconfig"
        ) from exc
    # trust_env off: the machine's proxy variables never route API traffic (a kubeconfig's own
    # proxy-url still applies, as in client-go)
    return Client(config=config, timeout=httpx.Timeout(timeout), field_manager=FIELD_MANAGER, trust_env=False)


def server_version(client: Client) -> str:
    """The API server's ``gitVersion`` (``GET /version``, readable by every authenticated user).
    lightkube has no call for it; its HTTP client is used directly (pinned lightkube 1.0)."""
    http = client._client._client  # lightkube 1.0's httpx client
    answer = http.get("/version")
    answer.raise_for_status()
    return str(answer.json().get("gitVersion", ""))
