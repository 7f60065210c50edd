"""The ``podnet`` command: lab, agent, operator and the verification commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from podnet import __version__

NO_ROOT = {"operator"}  # talks to etcd only
Subparsers = Any  # argparse's _SubParsersAction (private)


def _lab(sub: Subparsers) -> None:
    from podnet.lab import cli as lab_cli

    lab_cli.add_parser(sub)


def _agent(sub: Subparsers) -> None:
    from podnet.agent import cli as agent_cli

    agent_cli.add_parser(sub)


def _operator_help(sub: Subparsers) -> None:
    sub.add_parser(
        "operator", help="run the IPAM operator of a mode it serves (podnet operator -h lists them)"
    )


def _config(sub: Subparsers) -> None:
    from podnet import configcmd
    from podnet.lab.view import lab_agents

    configcmd.add_parser(sub, lab_agents)


def _cni(sub: Subparsers) -> None:
    from podnet.cni import cli as cni_cli

    cni_cli.add_parser(sub)


def _demo(sub: Subparsers) -> None:
    from podnet import demo

    demo.add_parser(sub)


def _verify(sub: Subparsers) -> None:
    from podnet.lab.view import open_lab
    from podnet.verify import cli as verify_cli

    verify_cli.add_parsers(sub, open_lab)  # status, ipam, connectivity, perf, capture, diagnose


def _bgp(sub: Subparsers) -> None:
    from podnet.lab.view import open_lab
    from podnet.verify import bgp as bgp_cli

    bgp_cli.add_parser(sub, open_lab)  # podnet bgp peers|routes


def _drops(sub: Subparsers) -> None:
    from podnet.lab.view import open_lab
    from podnet.verify import drops as drops_cli

    drops_cli.add_parser(sub, open_lab)  # podnet drops [--follow]


def _policy(sub: Subparsers) -> None:
    from podnet.lab.view import open_lab
    from podnet.verify import policy as policy_cli

    policy_cli.add_parser(sub, open_lab)  # podnet policy show POD


# every command, in the order ``podnet -h`` lists them, and what registers it. Only the named
# command's module is imported (a process pays for its own command: ``podnet status`` does not
# import the demo, the lab's control plane or the datapath); ``podnet -h`` imports them all.
COMMANDS: dict[str, Callable[[Subparsers], None]] = {
    "lab": _lab,
    "agent": _agent,
    "operator": _operator_help,
    "config": _config,
    "install-cni": _cni,
    "demo": _demo,
    **dict.fromkeys(("status", "ipam", "connectivity", "perf", "capture", "diagnose"), _verify),
    "bgp": _bgp,
    "drops": _drops,
    "policy": _policy,
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone when it is one of COMMANDS, else of every command; the
    verification commands and ``config set`` get the lab adapter here, so that ``--lab`` only
    chooses which cluster view they read (``podnet.verify.view``)."""
    parser = argparse.ArgumentParser(prog="podnet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"podnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    builders = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for add in builders:
        add(sub)
    return parser


def _operator(rest: list[str]) -> int:
    from podnet.operator.cli import main as operator_main

    return operator_main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["operator"]:  # the operator has its own flags and parser
        return _operator(argv[1:])
    args = build_parser(argv[0] if argv else None).parse_args(argv)
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
