"""What every IPAM mode's operator command shares: the ``ModeOperator`` a mode's spec names
(``IpamSpec.operator``: the mode's own flags, the flags its settings mean, its run), and the
datastore the common flags name.

Design fact: ``podnet operator`` names no mode. Its parser is the common flags plus every
mode's own; ``--config`` fills what the flags did not give from the flags the mode's
``config_argv`` makes of the agents' settings, which is also the argv the lab starts it with.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from podnet.registry import IPAM_MODES
from podnet.store.client import Store, StoreError, TlsFiles
from podnet.store.operatorstate import EtcdOperatorState, OperatorState

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig


class ModeOperator(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The mode's own flags (a flag's help starts with the mode's name)."""
        ...

    def config_argv(self, cfg: AgentConfig) -> list[str]:
        """The flags that run this mode's operator as the agents' settings ``cfg`` say (``--ipam``
        included unless it is the default), without the datastore's."""
        ...

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        """Serve until ``stop``; the exit status (2: the flags are wrong, said on stderr)."""
        ...


def operator_modes() -> dict[str, ModeOperator]:
    """Every mode podnet's operator serves, by ``ipam.mode`` value."""
    return {spec.name: spec.part("operator") for spec in IPAM_MODES.specs() if spec.operator}


def mode_operator(name: str) -> ModeOperator:
    found: ModeOperator = IPAM_MODES.spec(name).part("operator")
    if found is None:
        raise LookupError(f"podnet's operator does not serve ipam.mode {name}")
    return found


def tick(args: argparse.Namespace) -> float:
    """Seconds between reconciliations: a quarter of the grace period, within 0.2 .. 10."""
    return float(min(max(args.grace_period / 4.0, 0.2), 10.0))


def fail(message: str) -> int:
    print(f"podnet operator: {message}", file=sys.stderr)
    return 2


def operator_state(args: argparse.Namespace) -> OperatorState | None:
    """The datastore the flags name, as the operators use it; None after saying why not."""
    if args.datastore == "kubernetes":
        from podnet.kube.client import KubeConnectError, connect
        from podnet.kube.operatorstate import KubeOperatorState

        try:
            return KubeOperatorState(lambda: connect(args.k8s_kubeconfig_path))
        except KubeConnectError as exc:
            print(f"podnet operator: {exc}", file=sys.stderr)
            return None
    store = etcd_store(args)
    return EtcdOperatorState(store) if store is not None else None


def serve_state(args: argparse.Namespace, run: Callable[[OperatorState], None]) -> int:
    """``run`` on the datastore the flags name, closed after; the exit status."""
    state = operator_state(args)
    if state is None:
        return 2 if args.datastore == "etcd" else 1
    try:
        run(state)
    except StoreError as exc:
        print(f"podnet operator: {exc}", file=sys.stderr)
        return 1
    finally:
        state.close()
    return 0


def etcd_store(args: argparse.Namespace) -> Store | None:
    """The etcd client the flags describe; None (after saying why) when they do not fit."""
    if not args.etcd_endpoints:
        print("podnet operator: --etcd-endpoints is required with --datastore etcd", file=sys.stderr)
        return None
    files = (args.etcd_trusted_ca_file, args.etcd_cert_file, args.etcd_key_file)
    if any(files) and not all(files):
        print("podnet operator: --etcd-trusted-ca-file, --etcd-cert-file and --etcd-key-file go together",
              file=sys.stderr)  # fmt: skip
        return None
    return Store(args.etcd_endpoints, tls=TlsFiles(*files) if all(files) else None)
