"""``podnet install-cni``: put the CNI plugin and its conflist where the container runtime looks."""

from __future__ import annotations

import argparse
import sys

from podnet.cni.spec import DEFAULT_AGENT_SOCKET


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("install-cni", help="install the podnet CNI plugin and conflist on this host")
    p.add_argument("--bin-dir", default="/opt/cni/bin", help="the runtime's CNI plugin directory")
    p.add_argument("--conf-dir", default="/etc/cni/net.d", help="the runtime's CNI config directory")

    p.add_argument("--agent-socket", default=DEFAULT_AGENT_SOCKET, help="the local agent's API socket")
    p.add_argument(
        "--cni-version",
        default="1.0.0",
        help="the conflist's cniVersion (1.0.0: what libcni 1.1.x runtimes parse; 1.1.0 adds GC and STATUS)",
    )
    p.add_argument(
        "--plugin",
        default="auto",
        choices=("auto", "compiled", "python"),
        help="the compiled plugin (auto: when it was built) or the Python launcher",
    )
    p.set_defaults(func=cmd_install)


def cmd_install(args: argparse.Namespace) -> int:
    from podnet.cni.install import install_cni

    try:
        done = install_cni(
            args.bin_dir,
            args.conf_dir,
            socket=args.agent_socket,
            python=sys.executable,
            cni_version=args.cni_version,
            kind=args.plugin,
        )
    except ValueError as e:
        print(f"podnet install-cni: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"podnet install-cni: cannot write {e.filename}: {e.strerror}; run as root or pick other "
            "directories with --bin-dir/--conf-dir",
            file=sys.stderr,
        )
        return 1
    print(f"installed {done.binary} ({done.kind} plugin)\nwrote     {done.conflist}")
    return 0
