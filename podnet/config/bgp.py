"""The agent's BGP settings, in Cilium's BGP control plane names, parsed and validated (pure).

``bgp: {enabled, localASN, peers: [{peerAddress, peerASN, holdTime, keepaliveTime, password,
gracefulRestart}], advertise: [PodCIDR]}``. A peer's address family is its session's: an IPv6
peer carries the IPv6 pod CIDRs (``ipv6 unicast``), an IPv4 one the IPv4 ones. Cilium's CRD
spellings are accepted too
(``holdTimeSeconds``, ``keepAliveTimeSeconds``, ``gracefulRestart: {enabled,
restartTimeSeconds}``, ``peerAddress: 172.16.2.1/32``). Errors are ``ValueError`` subclasses that
name the key path (``bgp.peers[0].peerASN``) so ``podnet.config`` can report them as ConfigError.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ASN_MAX = 2**32 - 1
ADVERTISEMENTS = ("PodCIDR",)
DEFAULT_HOLD_TIME = 9
DEFAULT_KEEPALIVE_TIME = 3
DEFAULT_RESTART_TIME = 120


class BgpSettingError(ValueError):
    """A bad BGP setting: ``key`` is the path (``bgp.peers[1].peerAddress``), the message says why."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class BgpPeer:
    """One BGP neighbour of the node: ``neighbor <peer_address> as <peer_asn>``."""

    peer_address: ipaddress.IPv4Address | ipaddress.IPv6Address  # its family is the session's
    peer_asn: int
    hold_time: int = DEFAULT_HOLD_TIME
    keepalive_time: int = DEFAULT_KEEPALIVE_TIME
    password: str | None = None
    graceful_restart: bool = True
    restart_time: int = DEFAULT_RESTART_TIME
    ttl_security: bool = False  # GTSM (RFC 5082): send with TTL 255, accept only TTL 255 (one hop)

    def to_json(self) -> dict[str, Any]:
        return {
            "peerAddress": str(self.peer_address),
            "peerASN": self.peer_asn,
            "holdTime": self.hold_time,
            "keepaliveTime": self.keepalive_time,
            "password": "***" if self.password else None,
            "ttlSecurity": self.ttl_security,
            "gracefulRestart": {"enabled": self.graceful_restart, "restartTimeSeconds": self.restart_time},
        }


_PEER_KEYS: dict[str, str] = {
    "peeraddress": "peer_address",
    "address": "peer_address",
    "peerasn": "peer_asn",
    "holdtime": "hold_time",
    "holdtimeseconds": "hold_time",
    "keepalivetime": "keepalive_time",
    "keepalivetimeseconds": "keepalive_time",
    "password": "password",
    "gracefulrestart": "graceful_restart",
    "ttlsecurity": "ttl_security",
}
_PEER_SPELLINGS = (
    "peerAddress", "peerASN", "holdTime", "keepaliveTime", "password", "gracefulRestart", "ttlSecurity",
)  # fmt: skip


def _norm(key: str) -> str:
    return str(key).lower().replace("-", "").replace("_", "")


def parse_asn(key: str, value: Any) -> int:
    """An AS number 1..4294967295 (0 is reserved, RFC 7607)."""
    try:
        asn = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        asn = -1
    if not 1 <= asn <= ASN_MAX:
        raise BgpSettingError(
            key, f"{value!r} is not a usable AS number; use 1..{ASN_MAX} (private: 64512..65534)"
        )
    return asn


def parse_address(key: str, value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A peer's address, IPv4 or IPv6 (the session then carries that family's unicast routes);
    Cilium's ``172.16.2.1/32`` and ``fd00:2::1/128`` forms are accepted."""
    text = str(value).strip()
    for host_mask in ("/32", "/128"):
        text = text.removesuffix(host_mask)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BgpSettingError(
            key, f"{value!r} is not an IP address; write the router's address like 172.16.2.1 or fd00:2::1"
        ) from None
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        raise BgpSettingError(
            key, f"{address} cannot be a BGP peer here (link-local, multicast or unspecified); peer with "
            "the router's global or unique-local address",
        )  # fmt: skip
    return address


def _seconds(key: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if not low <= number <= high:
        raise BgpSettingError(key, f"{value!r} is not a number of seconds in {low}..{high}")
    return number


def _graceful_restart(key: str, value: Any) -> tuple[bool, int]:
    """``true``/``false``, a restart time in seconds, or ``{enabled, restartTimeSeconds}``."""
    if isinstance(value, bool):
        return value, DEFAULT_RESTART_TIME
    if isinstance(value, int):
        return True, _seconds(key, value, 1, 4095)
    if isinstance(value, Mapping):
        unknown = [k for k in value if _norm(k) not in ("enabled", "restarttimeseconds", "restarttime")]
        if unknown:
            raise BgpSettingError(f"{key}.{unknown[0]}", "unknown key; use enabled and restartTimeSeconds")
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            raise BgpSettingError(f"{key}.enabled", f"{enabled!r} is not a boolean; use true or false")
        raw_time = next(
            (v for k, v in value.items() if _norm(k) in ("restarttimeseconds", "restarttime")),
            DEFAULT_RESTART_TIME,
        )
        return enabled, _seconds(f"{key}.restartTimeSeconds", raw_time, 1, 4095)
    raise BgpSettingError(key, f"{value!r} is not true/false, seconds or {{enabled, restartTimeSeconds}}")


def parse_peer(key: str, raw: Any) -> BgpPeer:
    """One entry of ``bgp.peers``; ``key`` is its path for error messages."""
    if not isinstance(raw, Mapping):
        raise BgpSettingError(
            key, f"{raw!r} is not a mapping like {{peerAddress: 172.16.2.1, peerASN: 65001}}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        field = _PEER_KEYS.get(_norm(name))
        where = f"{key}.{name}"
        if field is None:
            close = difflib.get_close_matches(str(name), _PEER_SPELLINGS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(_PEER_SPELLINGS)}"
            raise BgpSettingError(where, f"unknown key; {hint}")
        if field == "peer_address":
            values[field] = parse_address(where, value)
        elif field == "peer_asn":
            values[field] = parse_asn(where, value)
        elif field == "hold_time":
            values[field] = _hold_time(where, value)
        elif field == "keepalive_time":
            values[field] = _seconds(where, value, 1, 21845)
        elif field == "password":
            values[field] = _password(where, value)
        elif field == "ttl_security":
            if not isinstance(value, bool):
                raise BgpSettingError(where, f"{value!r} is not true or false")
            values[field] = value
        else:
            values["graceful_restart"], values["restart_time"] = _graceful_restart(where, value)
    for required, spelling in (("peer_address", "peerAddress"), ("peer_asn", "peerASN")):
        if required not in values:
            raise BgpSettingError(f"{key}.{spelling}", "missing; every peer needs peerAddress and peerASN")
    peer = BgpPeer(**values)
    if peer.hold_time and peer.keepalive_time >= peer.hold_time:
        raise BgpSettingError(
            f"{key}.keepaliveTime",
            f"{peer.keepalive_time} must be shorter than holdTime {peer.hold_time} (a third of it is usual)",
        )
    return peer


def _hold_time(key: str, value: Any) -> int:
    seconds = _seconds(key, value, 0, 65535)
    if seconds in (1, 2):
        raise BgpSettingError(key, f"{seconds} is not allowed by BGP (RFC 4271); use 0 or 3..65535")
    return seconds


def _password(key: str, value: Any) -> str | None:
    text = "" if value is None else str(value)
    if len(text) > 80 or '"' in text or "\n" in text:
        raise BgpSettingError(key, "a TCP-MD5 password has at most 80 characters and no quotes")
    return text or None


def parse_peers(key: str, value: Any) -> tuple[BgpPeer, ...]:
    """``bgp.peers``: a list of peer mappings; two peers with one address are refused."""
    if value in (None, ""):
        return ()
    if not isinstance(value, list | tuple):
        raise BgpSettingError(key, f"{value!r} is not a list of {{peerAddress, peerASN}} mappings")
    peers = tuple(parse_peer(f"{key}[{i}]", item) for i, item in enumerate(value))
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for i, peer in enumerate(peers):
        if peer.peer_address in seen:
            raise BgpSettingError(
                f"{key}[{i}].peerAddress", f"{peer.peer_address} is listed twice; keep one entry per peer"
            )
        seen.add(peer.peer_address)
    return peers


def parse_advertise(key: str, value: Any) -> tuple[str, ...]:
    """What the node advertises; today only ``PodCIDR`` (Cilium's advertisementType)."""
    items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
    out: list[str] = []
    for item in items:
        text = str(item.get("advertisementType", "")) if isinstance(item, Mapping) else str(item).strip()
        match = next((a for a in ADVERTISEMENTS if a.lower() == text.lower()), None)
        if match is None:
            raise BgpSettingError(
                key, f"{text!r} cannot be advertised; use one of {', '.join(ADVERTISEMENTS)}"
            )
        if match not in out:
            out.append(match)
    return tuple(out)
