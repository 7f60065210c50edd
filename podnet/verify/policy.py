"""``podnet policy show POD``: the NetworkPolicy rules in force for a pod, as its node's agent
enforces them: which policies isolate it (ingress, egress) and what they allow, selectors
resolved to addresses and named ports to numbers.

``podnet policy apply|delete -f FILE`` and ``podnet policy list``: NetworkPolicies (and
Namespaces' labels) on ``datastore: etcd``, where no API server keeps them
(``podnet.policy.documents``); ``--config`` names an agent's file on a real host, ``--lab`` a lab."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from podnet.agent.api import request
from podnet.policy.documents import (
    Document,
    DocumentError,
    apply_documents,
    delete_documents,
    listed,
    parse_documents,
)
from podnet.statusdoc.answer import ApiError
from podnet.statusdoc.policy import PodPolicy
from podnet.store import keys
from podnet.store.client import Store, StoreError
from podnet.verify.view import LabOpener, NoAgentError, ViewError


def add_parser(sub: argparse._SubParsersAction, open_lab: LabOpener) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("policy", help="NetworkPolicy: the rules in force for a pod")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="the rules in force for POD (ingress and egress, resolved)")
    show.add_argument("pod", help="a pod of the lab (its lab name, <namespace>.<name> for a real pod)")
    show.add_argument("--lab", help="the lab (default: the only one up)")
    show.add_argument("-o", "--output", choices=["table", "json"], default="table")
    show.set_defaults(func=partial(cmd_show, open_lab=open_lab))
    for verb, what in (
        ("apply", "keep the NetworkPolicy and Namespace documents of FILE (datastore etcd)"),
        ("delete", "remove the documents of FILE, or NAMESPACE/NAME policies (datastore etcd)"),
    ):
        v = verbs.add_parser(verb, help=what)
        v.add_argument("-f", "--filename", help="a YAML or JSON file of Kubernetes objects, - for stdin")
        if verb == "delete":
            v.add_argument("names", nargs="*", help="NAMESPACE/NAME of NetworkPolicies")
        _where(v)
        v.set_defaults(func=partial(cmd_apply if verb == "apply" else cmd_delete, open_lab=open_lab))
    ls = verbs.add_parser("list", help="the NetworkPolicies and Namespaces kept in etcd")
    _where(ls)
    ls.set_defaults(func=partial(cmd_list, open_lab=open_lab))


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", help="the lab (default: the only one up)")
    p.add_argument("--config", help="an agent's file on a real host (its etcd endpoints and certificates)")


@contextlib.contextmanager
def _store(args: argparse.Namespace, open_lab: LabOpener) -> Iterator[Store]:
    if args.config:
        from podnet.config.agent import ConfigError, load_config_file

        try:
            cfg = load_config_file(args.config)
        except ConfigError as exc:
            raise ViewError(str(exc)) from None
        if cfg.datastore != "etcd":
            raise ViewError(
                f"{args.config}: datastore is {cfg.datastore}: apply NetworkPolicies with kubectl"
            )
        tls = None
        if cfg.etcd_trusted_ca_file and cfg.etcd_cert_file and cfg.etcd_key_file:
            from podnet.store.client import TlsFiles

            tls = TlsFiles(str(cfg.etcd_trusted_ca_file), str(cfg.etcd_cert_file), str(cfg.etcd_key_file))
        with Store(list(cfg.etcd_endpoints), tls=tls) as store:
            yield store
        return
    with open_lab(args.lab) as view, view.cluster_store() as store:
        yield store


def _documents(path: str) -> list[Document]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return parse_documents(list(yaml.safe_load_all(text)))
    except (OSError, yaml.YAMLError) as exc:
        raise DocumentError(f"cannot read {path}: {exc}") from None


def _fail(exc: Exception) -> int:
    print(f"podnet policy: {exc}", file=sys.stderr)
    return 1


def cmd_apply(args: argparse.Namespace, open_lab: LabOpener) -> int:
    if not args.filename:
        return _fail(DocumentError("say which file: podnet policy apply -f FILE"))
    try:
        docs = _documents(args.filename)
        with _store(args, open_lab) as store:
            revision = apply_documents(store, docs)
    except (DocumentError, ViewError, StoreError, OSError, ValueError) as exc:
        return _fail(exc)
    for d in docs:
        print(f"{d.ref} configured")
    print(f"revision {revision}: a node enforces it once its status shows policy.covered.etcd >= it")
    return 0


def cmd_delete(args: argparse.Namespace, open_lab: LabOpener) -> int:
    try:
        docs = _documents(args.filename) if args.filename else []
        for name in args.names:
            ns, _, pol = name.rpartition("/")
            key = keys.netpol_key(ns or "default", pol)
            docs.append(Document("NetworkPolicy", ns or "default", pol, key, ""))
        if not docs:
            raise DocumentError("say what to delete: -f FILE or NAMESPACE/NAME")
        with _store(args, open_lab) as store:
            revision, gone = delete_documents(store, docs)
    except (DocumentError, ViewError, StoreError, OSError, ValueError) as exc:
        return _fail(exc)
    for d in docs:
        print(f"{d.ref} {'deleted' if d.ref in gone else 'not found'}")
    print(f"revision {revision}")
    return 0


def cmd_list(args: argparse.Namespace, open_lab: LabOpener) -> int:
    try:
        with _store(args, open_lab) as store:
            rows = listed(store)
    except (ViewError, StoreError, OSError, ValueError) as exc:
        return _fail(exc)
    print("\n".join(rows) if rows else "no NetworkPolicies or Namespaces in etcd")
    return 0


def render(pod: str, doc: PodPolicy | Mapping[str, Any]) -> list[str]:
    """The text of ``podnet policy show`` (pure), from the agent's answer (or its JSON)."""
    if not isinstance(doc, PodPolicy):
        doc = PodPolicy.from_json(doc)
    lines = [f"{pod} on {doc.node}"]
    for direction, by, allowed in (
        ("Ingress", doc.ingress_isolated_by, doc.ingress),
        ("Egress", doc.egress_isolated_by, doc.egress),
    ):
        if not by:
            lines.append(f"  {direction}: not isolated (everything allowed)")
            continue
        entries = f"{len(allowed)} allowed entr{'y' if len(allowed) == 1 else 'ies'}"
        lines.append(f"  {direction}: isolated by {', '.join(by)}; {entries}")
        lines += [f"    allow {e}" for e in allowed] or ["    (nothing: every new connection is dropped)"]
    for problem in doc.status.invalid:
        lines.append(f"  refused policy: {problem}")
    for problem in doc.status.unresolved:
        lines.append(f"  note: {problem}")
    return lines


def cmd_show(args: argparse.Namespace, open_lab: LabOpener) -> int:
    try:
        with open_lab(args.lab) as view:
            pods = view.pods  # type: ignore[attr-defined]
            if args.pod not in pods:
                raise ViewError(f"{args.pod} is no pod of lab {view.lab} (pods: {', '.join(sorted(pods))})")
            info = pods[args.pod]
            docs = []
            for ip in info["ips"]:
                docs.append(
                    request(view.agent_socket(info["node"]), {"op": "policy", "ip": ip}, timeout=10.0)
                )
    except (ViewError, NoAgentError, OSError) as exc:
        print(f"podnet policy: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"pod": args.pod, "addresses": docs}, indent=2))
        return 0
    for doc in docs:
        error = ApiError.from_json(doc)
        if error is not None:
            print(f"podnet policy: {error.msg}", file=sys.stderr)
            return 1
        print("\n".join(render(args.pod, PodPolicy.from_json(doc))))
    return 0
