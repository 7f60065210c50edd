"""ExaBGP's API process: relays the agent's commands to ExaBGP and records what ExaBGP reports.

ExaBGP starts this program (``python -m podnet.bgp.relay <workdir>``) and talks to it over
stdin/stdout: commands go out on stdout, ExaBGP answers each with ``done`` or ``error`` and
sends JSON events (session state changes, received updates) on stdin. The agent connects to
``<workdir>/api.sock`` and sends one command per line; the relay answers with ExaBGP's ack. The
last known sessions are kept in ``<workdir>/state.json``. When ExaBGP goes, stdin closes and
the relay exits.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

ACK_TIMEOUT = 5.0


def apply_event(peers: dict[str, dict[str, Any]], event: dict[str, Any], now: float) -> bool:
    """Fold one ExaBGP JSON event into ``peers``; returns whether anything changed (pure)."""
    neighbor = event.get("neighbor") or {}
    address = (neighbor.get("address") or {}).get("peer")
    if not address:
        return False
    peer = peers.setdefault(address, {"state": "idle", "since": now, "received": []})
    kind = event.get("type")
    if kind == "state":
        state = str(neighbor.get("state", "unknown"))
        if state != peer["state"]:
            peer["state"], peer["since"] = state, now
        if state == "down":
            peer["received"] = []
        return True
    if kind != "update":
        return False
    update = (neighbor.get("message") or {}).get("update") or {}
    received = set(peer["received"])
    for family in (update.get("announce") or {}).values():
        for _nexthop, routes in (family or {}).items():
            received.update(_prefixes(routes))
    for routes in (update.get("withdraw") or {}).values():
        received.difference_update(_prefixes(routes))
    peer["received"] = sorted(received)
    return True


def _prefixes(routes: Any) -> list[str]:
    """ExaBGP lists NLRIs as ``[{"nlri": "10.244.2.0/24"}, ...]`` (5.x) or ``{"10.244.2.0/24": {}}``."""
    if isinstance(routes, dict):
        return [str(k) for k in routes]
    if isinstance(routes, list):
        return [str(r.get("nlri")) if isinstance(r, dict) else str(r) for r in routes]
    return []


class Relay:
    def __init__(self, workdir: Path, out: TextIO) -> None:
        self.workdir = workdir
        self.out = out
        self.acks: queue.Queue[str] = queue.Queue()
        self.peers: dict[str, dict[str, Any]] = {}
        self.send_lock = threading.Lock()

    def save(self) -> None:
        tmp = self.workdir / "state.json.tmp"
        tmp.write_text(json.dumps({"pid": os.getppid(), "peers": self.peers}))
        os.replace(tmp, self.workdir / "state.json")

    def on_line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if text in ("done", "error") or text.startswith("error"):
            self.acks.put(text)
            return
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            return
        if isinstance(event, dict) and apply_event(self.peers, event, time.time()):
            self.save()

    def send(self, command: str) -> str:
        with self.send_lock:
            while not self.acks.empty():
                self.acks.get_nowait()
            self.out.write(command.strip() + "\n")
            self.out.flush()
            try:
                return self.acks.get(timeout=ACK_TIMEOUT)
            except queue.Empty:
                return "error: no answer from exabgp"

    def serve(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen(8)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rw") as stream:
            for line in stream:
                if line.strip():
                    stream.write(self.send(line) + "\n")
                    stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    workdir = Path(args[0])
    relay = Relay(workdir, sys.stdout)
    relay.save()
    threading.Thread(target=relay.serve, args=(workdir / "api.sock",), daemon=True).start()
    for line in sys.stdin:
        relay.on_line(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
