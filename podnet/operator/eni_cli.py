"""``podnet operator --ipam eni`` (``operator.serving.ModeOperator``): the EC2 API's flags (Cilium's
operator names), what the agents' ``eni:`` settings make of them, and the ENI operator on either
datastore (on Kubernetes only while it holds the operator's Lease)."""

from __future__ import annotations

import argparse
import os
import socket
import threading
from typing import TYPE_CHECKING

from podnet.config.eni import EniSettingError, parse_eni
from podnet.operator.eni import EniOperator, ec2_client
from podnet.operator.serving import etcd_store, fail

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig


class EniCli:
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ec2-api-endpoint", default="", help="eni: the EC2 API URL (default: the region's)"
        )
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

    def config_argv(self, cfg: AgentConfig) -> list[str]:
        eni = cfg.setting("eni")
        argv = ["--ipam", "eni", "--ec2-api-endpoint", eni.ec2_endpoint, "--aws-region", eni.region]
        argv += ["--aws-release-excess-ips" if eni.release_excess else "--no-aws-release-excess-ips"]
        return [*argv, "--excess-ip-release-delay", f"{eni.release_delay:g}"]

    def run(self, args: argparse.Namespace, stop: threading.Event) -> int:
        try:
            settings = {
                "awsReleaseExcessIPs": args.aws_release_excess_ips,
                "excessIPReleaseDelay": args.excess_ip_release_delay,
                "ec2APIEndpoint": args.ec2_api_endpoint,
                "awsRegion": args.aws_region,
            }
            defaults = parse_eni("operator", settings)
        except EniSettingError as exc:
            return fail(f"{exc.key}: {exc}")
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

        store = etcd_store(args)
        if store is None:
            return 2
        with store:
            EniOperator(EtcdEniState(store), ec2, defaults).run(stop)
        return 0


OPERATOR = EniCli()
