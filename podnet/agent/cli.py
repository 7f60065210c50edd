"""``podnet agent``: run the node agent until a signal; the datapath stays when it stops.

SIGTERM and SIGINT stop it for a restart (a rollout, a reboot): peers see no change, and the BGP
routers keep the node's routes for their graceful-restart time. SIGUSR1 stops it as a departure:
the node's BGP routes are withdrawn first (a node taken out of the fabric). SIGHUP reloads the
config file.
"""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("agent", help="run the podnet node agent")
    p.add_argument("--config", help="agent YAML (Cilium's setting names)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    p.add_argument(
        "--requested-pod-cidr",
        action="append",
        default=[],
        help="ask the operator for this pod CIDR (it is honoured when free and in the pool)",
    )
    p.add_argument("--log-level", default=os.environ.get("PODNET_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--on-host",
        action="store_true",
        help="this is a real node: allow changes in the machine's own network namespace "
        "(without it the agent refuses to run there, so a lab or test bug cannot touch the host)",
    )
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    from podnet.agent.daemon import Agent
    from podnet.config import ConfigError, load_config, load_config_file, parse_pairs

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    faulthandler.enable()  # a crash in C (a signal such as SIGSEGV) leaves its Python stack in the log
    try:
        overrides = parse_pairs(args.set)
        cfg = (
            load_config_file(args.config, os.environ, overrides)
            if args.config
            else load_config({}, os.environ, overrides)
        )
        requested = [ipaddress.ip_network(c) for c in args.requested_pod_cidr]
    except (ConfigError, ValueError) as exc:
        print(f"podnet agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    agent = Agent(
        cfg,
        requested,
        Path(args.config) if args.config else None,
        allow_initial_netns=args.on_host,
        overrides=overrides,
    )

    def on_stop(signum: int, _frame: object) -> None:
        stop.set()
        if not agent.status_info.ready:  # still starting (waiting for etcd, a CIDR, the watch): leave now
            logging.getLogger("podnet.agent").warning(
                "signal %d while starting (%s): leaving", signum, agent.status_info.phase
            )
            raise SystemExit(143)

    def on_leave(signum: int, frame: object) -> None:
        agent.leaving = True
        on_stop(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGUSR1, on_leave)
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    try:
        agent.start()
        agent.run(stop)
    except Exception as exc:
        logging.getLogger("podnet.agent").error("agent stopped: %s", exc)
        print(f"podnet agent: {exc}", file=sys.stderr)
        return 1
    finally:
        agent.shutdown()
    return 0
