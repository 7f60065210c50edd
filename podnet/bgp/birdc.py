"""Reading BIRD 2's ``birdc`` answers: BGP sessions and routes as plain dicts (pure parsers).

The lab's BIRD configs set ``timeformat protocol/route iso long`` so that times read as
``2026-11-21 23:32:18``. ``show protocols all`` gives one block per protocol (a line at column
0, then indented details); ``show route`` gives ``<prefix> unicast [<proto> <since>] * (100)
[AS64512i]`` followed by ``via <gw> on <dev>`` lines, further paths of the same prefix indented.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?"
_PROTO_LINE = re.compile(
    rf"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+(?P<since>{_TIME})\s*(?P<info>.*)$"
)
_ROUTE_LINE = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<kind>unicast|unreachable|blackhole|prohibit)\s+"
    rf"\[(?P<proto>\S+) (?P<since>{_TIME})"
    r"(?: from (?P<from>\S+))?\]\s*(?P<primary>\*)?\s*\((?P<pref>\d+)\)\s*(?:\[(?P<attrs>[^\]]*)\])?"
)
_VIA = re.compile(r"^\s+via (?P<gw>\S+) on (?P<dev>\S+)")
_ROUTES = re.compile(r"Routes:\s+(\d+) imported, (?:(\d+) filtered, )?(\d+) exported")


def _epoch(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text.split(".")[0], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None


def parse_protocols(text: str, now: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """BGP sessions from ``show protocols all``: name, state, uptime, neighbor, prefix counts."""
    sessions: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _PROTO_LINE.match(line)
        if m:
            current = None
            if m["proto"] == "BGP":
                since = _epoch(m["since"])
                up = m["state"] == "up"
                current = {
                    "name": m["name"],
                    "state": "established"
                    if up
                    else m["info"].split()[0].lower()
                    if m["info"]
                    else m["state"],
                    "info": m["info"].strip(),
                    "since": m["since"],
                    "uptime": round(now() - since, 1) if up and since else 0.0,
                    "peerAddress": None,
                    "peerASN": None,
                    "description": "",
                    "received": 0,
                    "sent": 0,
                }
                sessions.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        key, _, value = stripped.partition(":")
        value = value.strip()
        if key == "Description":
            current["description"] = value
        elif key == "Neighbor address":
            current["peerAddress"] = value
        elif key == "Neighbor AS":
            current["peerASN"] = int(value) if value.isdigit() else value
        elif key == "Routes":
            rm = _ROUTES.search(stripped)
            if rm:
                current["received"], current["sent"] = int(rm[1]), int(rm[3])
    return sessions


def parse_routes(text: str) -> list[dict[str, Any]]:
    """Routes from ``show route`` (any table): prefix, protocol, primary, next hops, origin AS."""
    routes: list[dict[str, Any]] = []
    prefix = ""
    for line in text.splitlines():
        m = _ROUTE_LINE.match(line)
        if m:
            prefix = m["prefix"] or prefix
            attrs = (m["attrs"] or "").strip()
            routes.append(
                {
                    "prefix": prefix,
                    "protocol": m["proto"],
                    "since": m["since"],
                    "primary": bool(m["primary"]),
                    "via": [],
                    "originAS": attrs[2:].rstrip("ie?").strip() if attrs.startswith("AS") else attrs,
                }
            )
            continue
        v = _VIA.match(line)
        if v and routes:
            routes[-1]["via"].append(v["gw"])
    return routes
