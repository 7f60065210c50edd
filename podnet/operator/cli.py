"""``podnet operator``: run the IPAM operator of a mode it serves until SIGTERM/SIGINT.

On etcd or Kubernetes:

    podnet operator --etcd-endpoints http://10.0.0.1:2379 \
        --cluster-pool-ipv4-cidr 10.244.0.0/16 --cluster-pool-ipv4-mask-size 24 --grace-period 60
    podnet operator --datastore kubernetes --k8s-kubeconfig-path /etc/podnet/kubeconfig \
        --cluster-pool-ipv4-cidr 10.244.0.0/16
    podnet operator --config /etc/podnet/config.yaml   # the agents' settings (Cilium's names)

The common flags are here; each mode adds its own (``IpamSpec.operator``, ``operator.serving``).
With ``--config``, what the flags would say comes from the agents' configuration file (the
ConfigMap of deploy/kubernetes/podnet.yaml): ipam.mode, the datastore and its connection, and
what the mode makes of its settings (the cluster pools and mask sizes of the families enabled, a
mode's own settings). A flag given as well wins over the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from podnet.config.agent import AgentConfig
from podnet.operator.serving import mode_operator, operator_modes
from podnet.registry import IPAM_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podnet operator", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the agents' YAML (Cilium's names): settings the flags do not give")
    parser.add_argument(
        "--datastore", choices=("etcd", "kubernetes"), default="etcd", help="where node records live"
    )
    parser.add_argument(
        "--k8s-kubeconfig-path",
        help="datastore kubernetes: a kubeconfig (default: the pod's service account)",
    )
    parser.add_argument("--etcd-endpoints", help="datastore etcd: comma-separated, e.g. http://IP:2379")
    parser.add_argument("--etcd-trusted-ca-file", help="CA of etcd's certificates (mutual TLS)")
    parser.add_argument("--etcd-cert-file", help="the operator's client certificate")
    parser.add_argument("--etcd-key-file", help="the operator's client key")
    parser.add_argument(
        "--ipam",
        choices=sorted(operator_modes()),
        default=IPAM_MODES.default(),
        help="the IPAM mode to serve (ipam.mode)",
    )
    for mode in operator_modes().values():
        mode.add_arguments(parser)
    parser.add_argument(
        "--grace-period",
        type=float,
        default=60.0,
        help="seconds a node may be gone before its CIDR is reclaimed",
    )
    parser.add_argument(
        "--fence-period",
        type=float,
        default=3600.0,
        help="seconds a gone node that last reported pod endpoints keeps its CIDR fenced",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in argv)


def apply_config(args: argparse.Namespace, argv: Sequence[str], cfg: AgentConfig) -> None:
    """Fill what ``argv`` did not give from the agents' configuration ``cfg`` (pure): the datastore's
    connection, and the flags the mode's ``config_argv`` makes of its settings."""

    def fill(flag: str, value: object) -> None:
        if not _given(argv, flag):
            setattr(args, flag[2:].replace("-", "_"), value)

    mode = cfg.ipam_mode if IPAM_MODES.spec(cfg.ipam_mode).operator else args.ipam
    fill("--ipam", mode)
    fill("--datastore", cfg.datastore)
    if cfg.k8s_kubeconfig_path is not None:
        fill("--k8s-kubeconfig-path", str(cfg.k8s_kubeconfig_path))
    if cfg.etcd_endpoints:
        fill("--etcd-endpoints", ",".join(cfg.etcd_endpoints))
    files = (
        ("--etcd-trusted-ca-file", cfg.etcd_trusted_ca_file),
        ("--etcd-cert-file", cfg.etcd_cert_file),
        ("--etcd-key-file", cfg.etcd_key_file),
    )
    for flag, path in files:
        if path is not None:
            fill(flag, str(path))
    mode_argv = mode_operator(args.ipam).config_argv(cfg)
    parser = build_parser()
    from_cfg = parser.parse_args(mode_argv)
    for action in parser._actions:
        flags = action.option_strings
        if any(_given(mode_argv, f) for f in flags) and not any(_given(argv, f) for f in flags):
            setattr(args, action.dest, getattr(from_cfg, action.dest))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.config:
        from podnet.config import ConfigError, load_config_file

        try:
            apply_config(args, argv, load_config_file(args.config, os.environ, {}))
        except (ConfigError, OSError) as exc:
            print(f"podnet operator: --config {args.config}: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return mode_operator(args.ipam).run(args, stop)


if __name__ == "__main__":
    sys.exit(main())
