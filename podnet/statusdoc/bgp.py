"""The agent's ``bgp`` section: its speaker, what it advertises and each configured session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BgpSession:
    """One configured peer and its session (the peer's settings as ``bgp.peers`` gave them)."""

    peer_address: str
    peer_asn: int
    state: str = "idle"  # established | idle | active | connect | ...
    hold_time: int | None = None
    keepalive_time: int | None = None
    password: str | None = None  # "***" when one is set, never the password
    ttl_security: bool = False
    graceful_restart: bool = False
    restart_time: int | None = None
    uptime: float = 0.0
    family: str = "ipv4"
    sent: int = 0
    received_prefixes: tuple[str, ...] = ()

    @property
    def established(self) -> bool:
        return self.state == "established"

    def to_json(self) -> dict[str, Any]:
        return {
            "peerAddress": self.peer_address,
            "peerASN": self.peer_asn,
            "holdTime": self.hold_time,
            "keepaliveTime": self.keepalive_time,
            "password": self.password,
            "ttlSecurity": self.ttl_security,
            "gracefulRestart": {"enabled": self.graceful_restart, "restartTimeSeconds": self.restart_time},
            "state": self.state,
            "uptime": self.uptime,
            "family": self.family,
            "sent": self.sent,
            "received": len(self.received_prefixes),
            "receivedPrefixes": list(self.received_prefixes),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> BgpSession:
        restart = doc.get("gracefulRestart") or {}
        return cls(
            peer_address=str(doc.get("peerAddress") or ""),
            peer_asn=int(doc.get("peerASN") or 0),
            state=str(doc.get("state") or "idle"),
            hold_time=doc.get("holdTime"),
            keepalive_time=doc.get("keepaliveTime"),
            password=doc.get("password"),
            ttl_security=bool(doc.get("ttlSecurity")),
            graceful_restart=bool(restart.get("enabled")),
            restart_time=restart.get("restartTimeSeconds"),
            uptime=float(doc.get("uptime") or 0.0),
            family=str(doc.get("family") or "ipv4"),
            sent=int(doc.get("sent") or 0),
            received_prefixes=tuple(str(p) for p in doc.get("receivedPrefixes") or ()),
        )


@dataclass(frozen=True)
class BgpStatus:
    enabled: bool = False
    speaker: str = ""
    pid: int | None = None
    running: bool = False
    restarts: int = 0
    local_asn: int | None = None
    router_id: str | None = None
    advertised: tuple[str, ...] = ()
    peers: tuple[BgpSession, ...] = field(default_factory=tuple)
    error: str | None = None

    def down(self) -> list[BgpSession]:
        return [p for p in self.peers if not p.established]

    def to_json(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False, "peers": []}
        return {
            "enabled": True,
            "speaker": self.speaker,
            "pid": self.pid,
            "running": self.running,
            "restarts": self.restarts,
            "localASN": self.local_asn,
            "routerID": self.router_id,
            "advertised": list(self.advertised),
            "peers": [p.to_json() for p in self.peers],
            "error": self.error,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> BgpStatus:
        """A section without ``enabled`` (a bare section, as tools write it) is on when it has
        sessions or prefixes."""
        if not doc or not doc.get("enabled", bool(doc.get("peers") or doc.get("advertised"))):
            return cls()
        return cls(
            enabled=True,
            speaker=str(doc.get("speaker") or ""),
            pid=doc.get("pid"),
            running=bool(doc.get("running")),
            restarts=int(doc.get("restarts") or 0),
            local_asn=doc.get("localASN"),
            router_id=doc.get("routerID"),
            advertised=tuple(str(p) for p in doc.get("advertised") or ()),
            peers=tuple(BgpSession.from_json(p) for p in doc.get("peers") or ()),
            error=doc.get("error"),
        )
