"""The agent's BGP controller: runs the node's speaker, keeps it announcing the pod CIDRs.

The speaker implementation is looked up by name in ``SPEAKERS`` (ExaBGP today; BIRD or GoBGP
would plug in with the same five methods). A watchdog thread restarts a speaker that died
(graceful restart keeps the routers' copies meanwhile); ``set_prefixes`` follows the node's pod
CIDRs with announce/withdraw; ``stop(withdraw=True)`` withdraws first (BGP switched off while
the agent runs: the routes go at once), while ``stop(withdraw=False, abrupt=True)`` (the agent
stopping, SIGTERM included: a restart or a rollout) kills the speaker without a NOTIFICATION, so
the routers keep the routes for the graceful-restart time as after a crash, and the next agent's
speaker refreshes them: peers never notice a restart.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from podnet.bgp.exabgp import ExaBgpSpeaker, Prefix, SpeakerError, SpeakerSpec
from podnet.config import AgentConfig
from podnet.statusdoc.bgp import BgpSession, BgpStatus

log = logging.getLogger("podnet.bgp")

WATCH_INTERVAL = 0.5
WITHDRAW_FLUSH = 0.3


class Speaker(Protocol):
    name: str

    @property
    def pid(self) -> int | None: ...

    def start(self, prefixes: Iterable[Prefix]) -> None: ...
    def running(self) -> bool: ...
    def announce(self, prefix: Prefix) -> None: ...
    def withdraw(self, prefix: Prefix) -> None: ...
    def sessions(self) -> Mapping[str, Any]: ...
    def stop(self, grace: float = 3.0, abrupt: bool = False) -> None: ...


SPEAKERS: dict[str, Callable[[SpeakerSpec], Speaker]] = {"exabgp": ExaBgpSpeaker}
DEFAULT_SPEAKER = "exabgp"


def pod_prefixes(cidrs: Iterable[Any]) -> tuple[Prefix, ...]:
    """The node's pod CIDRs to announce, IPv4 first (each goes to the peers of its family)."""
    found = {c for c in cidrs if isinstance(c, ipaddress.IPv4Network | ipaddress.IPv6Network)}
    return tuple(sorted(found, key=lambda c: (c.version, c)))


def router_id_from(name: str) -> ipaddress.IPv4Address:
    """A BGP router ID for a node without an IPv4 address (IPv6-only): IPv4-shaped as BGP wants
    it, made from the node's name, so that it is the same after every restart."""
    return ipaddress.IPv4Address(zlib.crc32(name.encode()) | 0x01000000)


class BgpController:
    """Owns the speaker process for the agent's lifetime (start, follow CIDRs, restart, stop)."""

    def __init__(
        self,
        config: AgentConfig,
        node_ip: ipaddress.IPv4Address | None,
        workdir: Path,
        speaker: str = DEFAULT_SPEAKER,
        node_ip6: ipaddress.IPv6Address | None = None,
    ) -> None:
        assert config.bgp_local_asn is not None
        self.config = config
        router_id = node_ip or router_id_from(config.node_name)
        self.spec = SpeakerSpec(
            router_id, node_ip, config.bgp_local_asn, config.bgp_peers, (), workdir, local_address6=node_ip6
        )
        self.speaker: Speaker = SPEAKERS[speaker](self.spec)
        self.prefixes: tuple[Prefix, ...] = ()
        self.restarts = 0
        self.started_at = 0.0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._withdraw_on_stop = True
        self._abrupt_stop = False

    # The speaker is started by the watchdog thread: with --pdeathsig it dies with the thread
    # that forked it, so that thread must live as long as the controller.
    def start(self, prefixes: Iterable[Any], timeout: float = 15.0) -> None:
        self.prefixes = pod_prefixes(prefixes)
        self._thread = threading.Thread(target=self._watch, name="bgp-speaker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or not self.speaker.running():
            raise SpeakerError(f"the BGP speaker did not start: {self.last_error or 'timeout'}")

    def _launch(self) -> None:
        with self._lock:
            self.speaker.start(self.prefixes)
            self.started_at = time.time()
        log.info("BGP speaker %s started (pid %s), announcing %s", self.speaker.name, self.speaker.pid,
                 ", ".join(map(str, self.prefixes)) or "nothing")  # fmt: skip

    def _watch(self) -> None:
        try:
            self._launch()
        except Exception as exc:
            self.last_error = str(exc)
        self._started.set()
        while not self._stop.wait(WATCH_INTERVAL):
            if self.speaker.running():
                continue
            self.restarts += 1
            log.warning("BGP speaker exited; restarting it (restart %d)", self.restarts)
            try:
                self._launch()
                self.last_error = ""
            except Exception as exc:  # try again on the next tick
                self.last_error = str(exc)
                log.error("BGP speaker restart failed: %s", exc)
        self._shutdown_speaker()

    def set_prefixes(self, cidrs: Iterable[Any]) -> list[str]:
        """Announce new pod CIDRs and withdraw gone ones; returns the changes made."""
        wanted = pod_prefixes(cidrs)
        changes: list[str] = []
        with self._lock:
            if wanted == self.prefixes:
                return changes
            try:
                for prefix in sorted(set(wanted) - set(self.prefixes)):
                    self.speaker.announce(prefix)
                    changes.append(f"announce {prefix}")
                for prefix in sorted(set(self.prefixes) - set(wanted)):
                    self.speaker.withdraw(prefix)
                    changes.append(f"withdraw {prefix}")
            except SpeakerError as exc:  # the watchdog restarts the speaker with self.prefixes
                self.last_error = str(exc)
                log.warning("BGP: %s", exc)
            self.prefixes = wanted
        for change in changes:
            log.info("BGP %s", change)
        return changes

    def stop(self, withdraw: bool = True, abrupt: bool = False) -> None:
        """Stop the speaker; with ``withdraw`` the routes are withdrawn first (BGP switched off);
        ``abrupt`` kills it without a NOTIFICATION (the routers' graceful restart keeps them)."""
        self._withdraw_on_stop = withdraw
        self._abrupt_stop = abrupt
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _shutdown_speaker(self) -> None:
        if self._withdraw_on_stop and self.speaker.running():
            try:
                for prefix in self.prefixes:
                    self.speaker.withdraw(prefix)
                time.sleep(WITHDRAW_FLUSH)  # let ExaBGP send the UPDATE before its NOTIFICATION
            except SpeakerError as exc:
                log.warning("withdrawing on stop: %s", exc)
        self.speaker.stop(abrupt=self._abrupt_stop)

    def status(self) -> dict[str, Any]:
        """The ``bgp`` section of the agent's status document."""
        sessions = self.speaker.sessions()
        now = time.time()
        peers = []
        for peer in self.config.bgp_peers:
            s = sessions.get(str(peer.peer_address), {})
            state = str(s.get("state", "idle"))
            up = state == "up"
            peers.append(
                BgpSession(
                    peer_address=str(peer.peer_address),
                    peer_asn=peer.peer_asn,
                    state="established" if up else state,
                    hold_time=peer.hold_time,
                    keepalive_time=peer.keepalive_time,
                    password="***" if peer.password else None,
                    ttl_security=peer.ttl_security,
                    graceful_restart=peer.graceful_restart,
                    restart_time=peer.restart_time,
                    uptime=round(now - float(s.get("since", now)), 1) if up else 0.0,
                    family="ipv4" if peer.peer_address.version == 4 else "ipv6",
                    sent=sum(p.version == peer.peer_address.version for p in self.prefixes) if up else 0,
                    received_prefixes=tuple(s.get("received", [])),
                )
            )
        return BgpStatus(
            enabled=True,
            speaker=self.speaker.name,
            pid=self.speaker.pid,
            running=self.speaker.running(),
            restarts=self.restarts,
            local_asn=self.spec.local_asn,
            router_id=str(self.spec.router_id),
            advertised=tuple(str(p) for p in self.prefixes),
            peers=tuple(peers),
            error=self.last_error or None,
        ).to_json()
