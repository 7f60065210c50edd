"""The ``podnet`` command: lab, agent, operator and the verification commands."""

from __future__ import annotations

import argparse
import os
import sys

from podnet import __version__

NO_ROOT = {"operator"}  # talks to etcd only


def build_parser() -> argparse.ArgumentParser:
    """Every command; the verification commands and ``config set`` get the lab adapter here, so
    that ``--lab`` only chooses which cluster view they read (``podnet.verify.view``)."""
    from podnet import configcmd, demo
    from podnet.agent import cli as agent_cli
    from podnet.cni import cli as cni_cli
    from podnet.lab import cli as lab_cli
    from podnet.lab.view import lab_agents, open_lab
    from podnet.verify import bgp as bgp_cli
    from podnet.verify import cli as verify_cli
    from podnet.verify import drops as drops_cli
    from podnet.verify import policy as policy_cli

    parser = argparse.ArgumentParser(prog="podnet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"podnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    lab_cli.add_parser(sub)
    agent_cli.add_parser(sub)
    sub.add_parser(
        "operator", help="run the IPAM operator of a mode it serves (podnet operator -h lists them)"
    )
    configcmd.add_parser(sub, lab_agents)
    cni_cli.add_parser(sub)
    demo.add_parser(sub)
    verify_cli.add_parsers(sub, open_lab)  # status, connectivity, perf, capture, diagnose
    bgp_cli.add_parser(sub, open_lab)  # podnet bgp peers|routes
    drops_cli.add_parser(sub, open_lab)  # podnet drops [--follow]
    policy_cli.add_parser(sub, open_lab)  # podnet policy show POD
    return parser


def _operator(rest: list[str]) -> int:
    from podnet.operator.cli import main as operator_main

    return operator_main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:  # the operator has its own flags and parser
        return _operator(argv[1:])
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0 and args.command not in NO_ROOT:
        print(
            f"error: podnet {args.command} needs root (network namespaces, netlink, nftables); "
            "run it as root, e.g. with sudo",
            file=sys.stderr,
        )
        return 1
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
