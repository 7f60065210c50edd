"""The node's BGP speaker: ExaBGP (PyPI), run as the agent's child and driven over its text API.

One ``neighbor`` block per configured peer, the pod CIDRs as static routes (``route <cidr>
next-hop self``) so that a restarted speaker re-announces them before its End-of-RIB (graceful
restart keeps the router's copy meanwhile), and one API process, ``podnet.bgp.relay``, through
which the agent announces and withdraws later changes and learns session states. ExaBGP runs
under ``setpriv --pdeathsig KILL``: if the agent dies (kill -9), its speaker dies with it and the
routers keep the routes for the graceful-restart time, as for a real crash; an agent that stops
(SIGTERM) kills it the same way, so a restart is no departure.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podnet.config.bgp import BgpPeer
from podnet.util.files import write_private

API_PROCESS = "podnet"
START_TIMEOUT = 10.0
COMMAND_TIMEOUT = 5.0


Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class SpeakerError(RuntimeError):
    """The speaker could not be started or did not take a command; the message says why."""


@dataclass(frozen=True)
class SpeakerSpec:
    """What one speaker instance announces, to whom, and where it keeps its files."""

    router_id: ipaddress.IPv4Address
    local_address: ipaddress.IPv4Address | None  # the node's IPv4 address (None: IPv6-only node)
    local_asn: int
    peers: tuple[BgpPeer, ...]
    prefixes: tuple[Prefix, ...]
    workdir: Path
    local_address6: ipaddress.IPv6Address | None = None  # the node's IPv6 address, for IPv6 peers

    def local_for(self, peer: BgpPeer) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The node's own address of ``peer``'s family (None: the node has no IPv6 address)."""
        return self.local_address if peer.peer_address.version == 4 else self.local_address6

    def prefixes_for(self, peer: BgpPeer) -> tuple[Prefix, ...]:
        """What ``peer`` is sent: the pod CIDRs of its family."""
        return tuple(p for p in self.prefixes if p.version == peer.peer_address.version)


def render_config(spec: SpeakerSpec, relay_argv: Iterable[str]) -> str:
    """ExaBGP's configuration file for ``spec`` (pure)."""
    lines = [f"process {API_PROCESS} {{", f"  run {' '.join(relay_argv)};", "  encoder json;", "}", ""]
    for peer in spec.peers:
        local = spec.local_for(peer)
        if local is None:
            raise SpeakerError(
                f"BGP peer {peer.peer_address} is IPv{peer.peer_address.version} but the node has no "
                f"IPv{peer.peer_address.version} address on its underlay device; give the node one or "
                "peer in the family it has"
            )
        family = "ipv4" if peer.peer_address.version == 4 else "ipv6"
        lines += [
            f"neighbor {peer.peer_address} {{",
            f"  router-id {spec.router_id};",
            f"  local-address {local};",
            f"  local-as {spec.local_asn};",
            f"  peer-as {peer.peer_asn};",
            f"  hold-time {peer.hold_time};",
        ]
        if peer.password:
            lines.append(f'  md5-password "{peer.password}";')
        if peer.ttl_security:  # GTSM: the router is one hop away; nothing farther can reach us
            lines += ["  outgoing-ttl 255;", "  incoming-ttl 255;"]
        lines.append("  capability {")
        if peer.graceful_restart:
            lines.append(f"    graceful-restart {peer.restart_time};")
        lines += ["  }", f"  family {{ {family} unicast; }}"]
        lines += [
            f"  api {{ processes [ {API_PROCESS} ]; neighbor-changes; receive {{ parsed; update; }} }}",
        ]
        if spec.prefixes_for(peer):
            lines.append("  static {")
            lines += [f"    route {p} next-hop self;" for p in spec.prefixes_for(peer)]
            lines.append("  }")
        lines += ["}", ""]
    return "\n".join(lines)


def speaker_env(workdir: Path) -> dict[str, str]:
    """ExaBGP's settings by environment: stay root (it binds to no port), log to stdout, ack."""
    return {
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_tcp_bind": "",
        "exabgp_api_ack": "true",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "INFO",
    }


def exabgp_binary() -> str:
    """The ``exabgp`` of this installation (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("exabgp")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("exabgp")
    if found is None:
        raise SpeakerError("exabgp is not installed; pip install 'exabgp>=5.0,<6' into podnet's venv")
    return found


class ExaBgpSpeaker:
    """One ExaBGP process; ``start`` writes the config and waits for the relay's API socket."""

    name = "exabgp"

    def __init__(self, spec: SpeakerSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_socket(self) -> Path:
        return self.spec.workdir / "api.sock"

    @property
    def state_file(self) -> Path:
        return self.spec.workdir / "state.json"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, prefixes: Iterable[Prefix]) -> None:
        self.spec = SpeakerSpec(**{**self.spec.__dict__, "prefixes": tuple(prefixes)})
        workdir = self.spec.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in (self.api_socket, self.state_file):
            stale.unlink(missing_ok=True)
        relay = [sys.executable, "-m", "podnet.bgp.relay", str(workdir)]
        conf = workdir / "exabgp.conf"
        write_private(conf, render_config(self.spec, relay))  # it holds the BGP password
        argv = [exabgp_binary(), str(conf)]
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "KILL", *argv]
        with open(workdir / "exabgp.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **speaker_env(workdir)},
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.api_socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SpeakerError(
                    f"exabgp did not start (see {workdir / 'exabgp.log'}): {_tail(workdir / 'exabgp.log')}"
                )
            time.sleep(0.02)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, line: str) -> str:
        """Send one API command (``announce route ...``); returns ExaBGP's ack (``done``)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(COMMAND_TIMEOUT + 1)
                s.connect(str(self.api_socket))
                s.sendall(line.encode() + b"\n")
                reply = s.makefile().readline().strip()
        except OSError as exc:
            raise SpeakerError(f"exabgp API command {line!r} failed: {exc}") from exc
        if reply != "done":
            raise SpeakerError(f"exabgp refused {line!r}: {reply or 'no answer'}")
        return reply

    def _to(self, prefix: Prefix) -> str:
        """ExaBGP's neighbour selector for the peers of ``prefix``'s family (empty: no such peer)."""
        peers = [p.peer_address for p in self.spec.peers if p.peer_address.version == prefix.version]
        return ", ".join(f"neighbor {address}" for address in peers)

    def announce(self, prefix: Prefix) -> None:
        if to := self._to(prefix):
            self.command(f"{to} announce route {prefix} next-hop self")

    def withdraw(self, prefix: Prefix) -> None:
        if to := self._to(prefix):
            self.command(f"{to} withdraw route {prefix} next-hop self")

    def sessions(self) -> Mapping[str, Any]:
        """Per peer address: ``{state, since, received: [prefixes]}`` as the relay last wrote it."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data.get("peers", {}) if isinstance(data, dict) else {}

    def stop(self, grace: float = 3.0, abrupt: bool = False) -> None:
        """SIGTERM (ExaBGP sends a NOTIFICATION: peers drop its routes at once), or with ``abrupt``
        SIGKILL (the TCP session just ends: graceful-restart peers keep its routes)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if abrupt:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        self.api_socket.unlink(missing_ok=True)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
