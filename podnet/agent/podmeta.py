"""The pod behind a CNI call, from the API server (``datastore: kubernetes``): its labels and
annotations and its namespace's labels and annotations, as policies and an IPAM mode that picks
a pool need them.

Design fact: the runtime (kubelet) names the pod in CNI_ARGS (``K8S_POD_NAMESPACE``,
``K8S_POD_NAME``, ``K8S_POD_UID``); the agent reads the rest from the API server, never from the
pod. A Pod whose UID differs from ``K8S_POD_UID`` is another pod of the same name (the old one was
deleted and a new one made): the ADD is refused with "try again later" (code 11) so the kubelet
retries with the current sandbox. A Pod not found yet (a watch behind the kubelet) is retried for
a moment; after that the ADD goes on without metadata and says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Namespace, Pod

log = logging.getLogger(__name__)

NOT_FOUND = 404
LOOKUP_PATIENCE = 2.0  # seconds a Pod may be missing before ADD goes on without it


class PodChanged(Exception):
    """The Pod of that name is not the one the runtime is wiring (its UID differs)."""


@dataclass(frozen=True)
class PodMeta:
    uid: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    namespace_labels: tuple[tuple[str, str], ...]
    namespace_annotations: tuple[tuple[str, str], ...] = ()


def _pairs(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


class KubePodResolver:
    def __init__(self, make_client: Callable[[], Client], patience: float = LOOKUP_PATIENCE) -> None:
        self._client = make_client()
        self._patience = patience

    def resolve(self, namespace: str, name: str, uid: str = "") -> PodMeta | None:
        """The pod's metadata, None when it cannot be found in time; ``PodChanged`` on a UID mismatch."""
        if not namespace or not name:
            return None
        deadline = time.monotonic() + self._patience
        while True:
            try:
                pod = self._client.get(Pod, name, namespace=namespace)
                break
            except ApiError as exc:
                if exc.status.code != NOT_FOUND or time.monotonic() > deadline:
                    log.warning(
                        "pod %s/%s: no metadata from the API server (%s)", namespace, name, exc.status.message
                    )
                    return None
            except Exception as exc:  # the API server away: the datapath does not wait for it
                log.warning("pod %s/%s: no metadata from the API server (%s)", namespace, name, exc)
                return None
            time.sleep(0.1)
        found = str(pod.metadata.uid or "")
        if uid and found and uid != found:
            raise PodChanged(
                f"pod {namespace}/{name} is now another pod (UID {found}, the runtime passed {uid}); "
                "the kubelet retries with the current one"
            )
        try:
            ns_meta = self._client.get(Namespace, namespace).metadata
            ns_labels, ns_annotations = _pairs(ns_meta.labels), _pairs(ns_meta.annotations)
        except Exception:
            ns_labels = ns_annotations = ()
        return PodMeta(
            found, _pairs(pod.metadata.labels), _pairs(pod.metadata.annotations), ns_labels, ns_annotations
        )

    def close(self) -> None:
        self._client.close()
