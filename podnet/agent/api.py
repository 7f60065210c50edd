"""The agent's local API: a root-only unix socket that the CNI shim and the CLI talk to.

One JSON object per connection, newline-terminated, answered by one JSON line (docs/cni.md).
Each connection runs in its own thread; a failing handler becomes an error answer, never a dead
server. The socket is bound under a temporary name, chmod 0600, then renamed into place, so the
final path never exists with looser permissions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any, Protocol

from podnet.cni import spec

log = logging.getLogger(__name__)

MAX_REQUEST = 4 * 1024 * 1024
LISTEN_BACKLOG = 1024  # a burst of pod starts queues here (the kernel caps it at net.core.somaxconn)
READ_TIMEOUT = 30.0


class ApiHandler(Protocol):
    """What the server dispatches to: ``op: cni`` and ``op: status``; both return a response dict."""

    def cni(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


def error_response(code: int, msg: str, details: str = "") -> dict[str, Any]:
    return {"ok": False, "code": code, "msg": msg, "details": details}


def dispatch(handler: ApiHandler, raw: bytes) -> dict[str, Any]:
    """Decode one request line and call the handler; every failure is an error response."""
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_response(spec.ERR_DECODE, "failed to decode request", str(exc))
    if not isinstance(request, dict):
        return error_response(spec.ERR_DECODE, "failed to decode request", "request is not a JSON object")
    op = request.get("op")
    try:
        if op == "cni":
            return handler.cni(request)
        if op == "status":
            return handler.status()
    except Exception as exc:
        log.exception("agent API op %r failed", op)
        return error_response(spec.ERR_AGENT_INTERNAL, "podnet agent internal error", f"{op}: {exc!r}")
    return error_response(spec.ERR_AGENT_PROTOCOL, "unknown API op", f"op {op!r} is not one of cni, status")


class _Connection(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(READ_TIMEOUT)
        try:
            raw = self.rfile.readline(MAX_REQUEST)
        except OSError as exc:
            log.warning("agent API: reading a request failed: %s", exc)
            return
        response = dispatch(self.server.api_handler, raw.rstrip(b"\n"))
        try:
            self.wfile.write(json.dumps(response).encode() + b"\n")
        except (OSError, TypeError, ValueError) as exc:
            log.warning("agent API: answering failed: %s", exc)


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, path: str, api_handler: ApiHandler) -> None:
        self.api_handler = api_handler
        super().__init__(path, _Connection, bind_and_activate=False)


class ApiServer:
    """A running API server; ``close()`` stops it and removes the socket file."""

    def __init__(self, path: Path, server: _Server, thread: threading.Thread) -> None:
        self.path = path
        self._server = server
        self._thread = thread

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(path: str | Path, handler: ApiHandler) -> ApiServer:
    """Bind ``path`` (mode 0600, parent made 0700 if missing) and serve ``handler`` in a thread."""
    final = Path(path)
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _clear_stale(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    server = _Server(str(tmp), handler)
    try:
        server.server_bind()
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        server.server_activate()
    except BaseException:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"podnet-api:{final}", daemon=True
    )
    thread.start()
    return ApiServer(final, server, thread)


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a dead agent; refuse if a live agent still answers on it."""
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise RuntimeError(
            f"agent API path {path} exists and is not a socket; remove it or pick another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise RuntimeError(
        f"agent API socket {path} is in use by a running process; stop it or pick another path"
    )


def request(path: str | Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request to an agent's local API at ``path``, for the CLI and the lab (the CNI shim has
    its own stdlib-only copy in ``podnet.cni.shim.call_agent``, which maps errors to CNI codes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")
