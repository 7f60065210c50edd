"""``podnet operator``: run the IPAM operator (cluster-pool, multi-pool or eni, on etcd or
Kubernetes) until SIGTERM/SIGINT.

    podnet operator --etcd-endpoints http://10.0.0.1:2379 \
        --cluster-pool-ipv4-cidr 10.244.0.0/16 --cluster-pool-ipv4-mask-size 24 --grace-period 60
    podnet operator --datastore kubernetes --k8s-kubeconfig-path /etc/podnet/kubeconfig \
        --cluster-pool-ipv4-cidr 10.244.0.0/16
    podnet operator --datastore kubernetes --ipam multi-pool   # pools are PodnetIPPool objects
    podnet operator --config /etc/podnet/config.yaml   # the agents' settings (Cilium's names)

With ``--config``, what the flags would say comes from the agents' configuration file (the
ConfigMap of deploy/kubernetes/podnet.yaml): ipam.mode, the cluster pools and mask sizes of the
families enabled, autoCreateCiliumPodIPPools, the datastore and its connection. A flag given as
well wins over the file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence

from podnet.config.agent import AgentConfig
from podnet.ipam.cidr import CIDRError, parse_pool_spec
from podnet.operator.cluster_pool import ClusterPoolOperator
from podnet.registry import IPAM_MODES
from podnet.store.client import Store, StoreError, TlsFiles
from podnet.store.operatorstate import EtcdOperatorState, OperatorState


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
        choices=[s.name for s in IPAM_MODES.specs() if s.operator],
        default="cluster-pool",
        help="the IPAM mode to serve (ipam.mode)",
    )
    parser.add_argument("--ec2-api-endpoint", default="", help="eni: the EC2 API URL (default: the region's)")
    parser.add_argument("--aws-region", default="us-east-1", help="eni: the AWS region")
    parser.add_argument(
        "--aws-release-excess-ips",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="eni: give back addresses above preAllocate + maxAboveWatermark (Cilium's default: off)",
    )
    parser.add_argument(
        "--excess-ip-release-delay",
        type=float,
        default=180.0,
        help="eni: seconds an excess lasts before release",
    )
    parser.add_argument(
        "--cluster-pool-ipv4-cidr",
        action="append",
        help="cluster pool CIDR (repeat or comma-separate for several): clusterPoolIPv4PodCIDRList",
    )
    parser.add_argument(
        "--auto-create-pod-ip-pools",
        help='multi-pool: pools to create when missing, as JSON: {"default": {"ipv4": {"cidrs": '
        '["10.10.0.0/16"], "maskSize": 24}}} (autoCreateCiliumPodIPPools)',
    )
    parser.add_argument("--cluster-pool-ipv4-mask-size", type=int, default=24, help="per-node mask size")
    parser.add_argument(
        "--cluster-pool-ipv6-cidr",
        action="append",
        help="dual stack: IPv6 pool CIDR(s), clusterPoolIPv6PodCIDRList (a CIDR of each family per node)",
    )
    parser.add_argument(
        "--cluster-pool-ipv6-mask-size",
        type=int,
        default=120,
        help="per-node IPv6 mask size (clusterPoolIPv6MaskSize)",
    )
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
    """Fill what ``argv`` did not give from the agents' configuration ``cfg`` (pure)."""
    import json

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
    pools = [str(c) for c in cfg.cluster_pool_ipv4_cidrs]
    if cfg.enable_ipv4 or mode != "cluster-pool":
        fill("--cluster-pool-ipv4-cidr", [",".join(pools)])
        fill("--cluster-pool-ipv4-mask-size", cfg.cluster_pool_ipv4_mask_size)
    if cfg.enable_ipv6 and mode == "cluster-pool":
        fill("--cluster-pool-ipv6-cidr", [",".join(str(c) for c in cfg.cluster_pool_ipv6_cidrs)])
        fill("--cluster-pool-ipv6-mask-size", cfg.cluster_pool_ipv6_mask_size)
    if mode == "multi-pool":
        configured = {name: json.loads(spec) for name, spec in cfg.auto_create_pod_ip_pools}
        if not configured:  # as the lab's default: one pool "default" over the cluster pool
            configured = {"default": {"ipv4": {"cidrs": pools, "maskSize": cfg.cluster_pool_ipv4_mask_size}}}
        fill("--auto-create-pod-ip-pools", json.dumps(configured, sort_keys=True))
    if mode == "eni":
        fill("--aws-region", cfg.eni.region)
        fill("--ec2-api-endpoint", cfg.eni.ec2_endpoint)
        fill("--aws-release-excess-ips", cfg.eni.release_excess)
        fill("--excess-ip-release-delay", cfg.eni.release_delay)


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
    if args.ipam == "multi-pool":
        return _run_multi_pool(args, stop)
    if args.ipam == "eni":
        return _run_eni(args, stop)
    pools = [c for item in args.cluster_pool_ipv4_cidr or [] for c in item.split(",") if c.strip()]
    pools6 = [c for item in args.cluster_pool_ipv6_cidr or [] for c in item.split(",") if c.strip()]
    if not pools and not pools6:
        print(
            "podnet operator: --cluster-pool-ipv4-cidr (or, for an IPv6-only cluster, "
            "--cluster-pool-ipv6-cidr) is required with --ipam cluster-pool",
            file=sys.stderr,
        )
        return 2
    try:
        spec6 = parse_pool_spec(pools6, args.cluster_pool_ipv6_mask_size, family=6) if pools6 else None
        spec = parse_pool_spec(pools, args.cluster_pool_ipv4_mask_size) if pools else spec6
    except CIDRError as exc:
        print(f"podnet operator: {exc}", file=sys.stderr)
        return 2
    assert spec is not None
    if spec is spec6:  # IPv6-only: the one pool is IPv6
        spec6 = None
    state = _operator_state(args)
    if state is None:
        return 2 if args.datastore == "etcd" else 1
    tick = min(max(args.grace_period / 4.0, 0.2), 10.0)
    grace, fence = args.grace_period, args.fence_period
    operator = ClusterPoolOperator(state, spec, grace, fence_seconds=fence, spec6=spec6)
    return _serve(state, lambda: operator.run(stop, tick))


def _run_multi_pool(args: argparse.Namespace, stop: threading.Event) -> int:
    import json

    from podnet.ipam.pools import parse_pool
    from podnet.operator.multi_pool import MultiPoolOperator

    try:
        auto = json.loads(args.auto_create_pod_ip_pools) if args.auto_create_pod_ip_pools else {}
        for name, spec in auto.items():
            parse_pool(name, spec)
    except (ValueError, AttributeError) as exc:
        print(f"podnet operator: --auto-create-pod-ip-pools: {exc}", file=sys.stderr)
        return 2
    state = _operator_state(args)
    if state is None:
        return 2 if args.datastore == "etcd" else 1
    tick = min(max(args.grace_period / 4.0, 0.2), 10.0)
    operator = MultiPoolOperator(state, args.grace_period, fence_seconds=args.fence_period, auto_create=auto)
    return _serve(state, lambda: operator.run(stop, tick))


def _operator_state(args: argparse.Namespace) -> OperatorState | None:
    """The datastore the flags name, as the operators use it; None after saying why not."""
    if args.datastore == "kubernetes":
        from podnet.kube.client import KubeConnectError, connect
        from podnet.kube.operatorstate import KubeOperatorState

        try:
            return KubeOperatorState(lambda: connect(args.k8s_kubeconfig_path))
        except KubeConnectError as exc:
            print(f"podnet operator: {exc}", file=sys.stderr)
            return None
    store = _etcd_store(args)
    return EtcdOperatorState(store) if store is not None else None


def _serve(state: OperatorState, run: Callable[[], None]) -> int:
    try:
        run()
    except StoreError as exc:
        print(f"podnet operator: {exc}", file=sys.stderr)
        return 1
    finally:
        state.close()
    return 0


def _run_eni(args: argparse.Namespace, stop: threading.Event) -> int:
    from podnet.config.eni import EniSettingError, parse_eni
    from podnet.operator.eni import EniOperator, ec2_client

    try:
        settings = {
            "awsReleaseExcessIPs": args.aws_release_excess_ips,
            "excessIPReleaseDelay": args.excess_ip_release_delay,
            "ec2APIEndpoint": args.ec2_api_endpoint,
            "awsRegion": args.aws_region,
        }
        defaults = parse_eni("operator", settings)
    except EniSettingError as exc:
        print(f"podnet operator: {exc.key}: {exc}", file=sys.stderr)
        return 2
    ec2 = ec2_client(defaults.ec2_endpoint, defaults.region)
    if args.datastore == "kubernetes":  # the documents are PodnetNode fields (spec.eni, status.eni)
        from podnet.kube.client import connect
        from podnet.kube.eni import KubeEniState
        from podnet.kube.lease import LeaderLease

        state = KubeEniState(lambda: connect(args.k8s_kubeconfig_path))
        lease = LeaderLease(connect(args.k8s_kubeconfig_path), f"{socket.gethostname()}_{os.getpid()}")
        try:
            EniOperator(state, ec2, defaults).run(stop, lead=lease.held)
        finally:
            lease.release()
            state.close()
        return 0
    from podnet.store.eni import EtcdEniState

    store = _etcd_store(args)
    if store is None:
        return 2
    with store:
        EniOperator(EtcdEniState(store), ec2, defaults).run(stop)
    return 0


def _etcd_store(args: argparse.Namespace) -> Store | None:
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


if __name__ == "__main__":
    sys.exit(main())
