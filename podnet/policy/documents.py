"""``podnet policy apply|delete -f FILE`` on ``datastore: etcd``: the same NetworkPolicy objects a
user gives kubectl, and Namespace objects for their labels (``namespaceSelector``), kept under
``/podnet/v1/policy/`` (docs/store.md).

Design facts: every document of a file is validated first (the API server's messages,
``podnet.policy.model``) and then written in ONE etcd transaction, so a file with one bad
document changes nothing; an unchanged document is still written (its revision is what the
agents report as enforced). ``kind: List`` is unpacked as kubectl does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from podnet.policy.model import PolicyError, parse_policy
from podnet.store import keys
from podnet.store.client import Store, op_delete, op_put


class DocumentError(ValueError):
    """A document podnet cannot keep; the message names it and says what to change."""


@dataclass(frozen=True)
class Document:
    kind: str  # "NetworkPolicy" | "Namespace"
    namespace: str  # "" for a Namespace
    name: str
    key: str
    value: str

    @property
    def ref(self) -> str:
        what = "networkpolicy" if self.kind == "NetworkPolicy" else "namespace"
        return f"{what} {self.namespace + '/' if self.namespace else ''}{self.name}"


def _flatten(docs: Iterable[Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise DocumentError(
                f"a document is {type(doc).__name__}, not an object: is this a Kubernetes manifest?"
            )
        if doc.get("kind") == "List":
            out += _flatten(doc.get("items") or [])
        else:
            out.append(doc)
    return out


def parse_documents(docs: Iterable[Any]) -> list[Document]:
    """Every document checked (``DocumentError`` naming the first bad one and why)."""
    out = []
    for i, doc in enumerate(_flatten(docs)):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        meta = doc.get("metadata") or {}
        where = f"document {i + 1} ({kind or 'no kind'} {meta.get('name') or ''})".replace(" )", ")")
        if kind == "NetworkPolicy":
            if api != "networking.k8s.io/v1":
                raise DocumentError(f"{where}: apiVersion {api!r}: NetworkPolicy is networking.k8s.io/v1")
            try:
                policy = parse_policy(doc)
            except PolicyError as exc:
                raise DocumentError(
                    f"{where}: NetworkPolicy.networking.k8s.io {meta.get('name')!r} is invalid: {exc}"
                ) from None
            body = {
                "apiVersion": api,
                "kind": kind,
                "metadata": {"namespace": policy.namespace, "name": policy.name},
                "spec": doc.get("spec") or {},
            }
            out.append(
                Document(
                    kind,
                    policy.namespace,
                    policy.name,
                    _key(keys.netpol_key, where, policy.namespace, policy.name),
                    json.dumps(body),
                )
            )
        elif kind == "Namespace":
            if api != "v1":
                raise DocumentError(f"{where}: apiVersion {api!r}: Namespace is v1")
            name = str(meta.get("name") or "")
            labels = meta.get("labels") or {}
            if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
                raise DocumentError(f"{where}: metadata.labels must be a map of strings")
            out.append(
                Document(
                    kind,
                    "",
                    name,
                    _key(keys.namespace_labels_key, where, name),
                    json.dumps({"labels": dict(labels)}, sort_keys=True),
                )
            )
        else:
            raise DocumentError(
                f"{where}: podnet keeps NetworkPolicy (networking.k8s.io/v1) and Namespace (v1) documents "
                "on the etcd datastore; apply other kinds to an API server"
            )
    return out


def _key(make: Any, where: str, *parts: str) -> str:
    try:
        return str(make(*parts))
    except ValueError as exc:
        raise DocumentError(f"{where}: metadata.name: {exc}") from None


def apply_documents(store: Store, docs: list[Document]) -> int:
    """All of them in one transaction; returns the revision that includes them."""
    if not docs:
        raise DocumentError("the file has no documents")
    return store.txn([], [op_put(d.key, d.value) for d in docs]).revision


def delete_documents(store: Store, docs: list[Document]) -> tuple[int, list[str]]:
    """All of them in one transaction; returns the revision and the refs that were there."""
    present = [d for d in docs if store.get(d.key) is not None]
    result = store.txn([], [op_delete(d.key) for d in docs])
    return result.revision, [d.ref for d in present]


def listed(store: Store) -> list[str]:
    """``<ns>/<name>`` of every NetworkPolicy, ``namespace <name> {labels}`` of every Namespace."""
    kvs, _ = store.list_prefix(keys.POLICY_PREFIX)
    rows = []
    for kv in kvs:
        if kv.key.startswith(keys.NETPOL_PREFIX):
            rows.append(f"networkpolicy {kv.key[len(keys.NETPOL_PREFIX) :]}")
        else:
            labels = json.loads(kv.value).get("labels") or {}
            text = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"
            rows.append(f"namespace {kv.key[len(keys.NAMESPACE_LABELS_PREFIX) :]} {text}")
    return rows
