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

from podnet.cni import answer, spec
from podnet.statusdoc.answer import ApiError

log = logging.getLogger(__name__)

MAX_REQUEST = 4 * 1024 * 1024
LISTEN_BACKLOG = 1024  # a burst of pod starts queues here (the kernel caps it at net.core.somaxconn)
READ_TIMEOUT = 30.0
MAX_FDS = 4  # descriptors accepted with one request (one is used; more is a bad request)


class ApiHandler(answer.Handler, Protocol):
    """What the server dispatches to: ``op: cni`` (a plugin call, ``podnet.cni.answer``),
    ``op: status``, ``op: drops`` (the drop monitor's events after ``since``) and ``op: policy``
    (the NetworkPolicy rules in force for a local pod's address)."""

    def status(self) -> dict[str, Any]: ...

    def drops(self, since: int) -> dict[str, Any]: ...

    def policy(self, ip: str) -> dict[str, Any]: ...


def error_response(code: int, msg: str, details: str = "") -> dict[str, Any]:
    return ApiError(code, msg, details).to_json()


def dispatch(handler: ApiHandler, raw: bytes, fd: int | None = None) -> dict[str, Any]:
    """Decode one request line and call the handler; every failure is an error response. ``fd``
    is the descriptor that came with the request (the pod's namespace); the caller closes it."""
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_response(spec.ERR_DECODE, "failed to decode request", str(exc))
    if not isinstance(request, dict):
        return error_response(spec.ERR_DECODE, "failed to decode request", "request is not a JSON object")
    op = request.get("op")
    try:
        if op == "cni":
            try:
                env, stdin, netns_error, deadline = answer.decode(request)
            except spec.CniError as exc:
                return answer.Answer(1, exc.to_json(), f"podnet: {exc}").to_json()
            return answer.answer(handler, env, stdin, fd, netns_error, deadline).to_json()
        if op == "status":
            return handler.status()
        if op == "drops":
            since = request.get("since", 0)
            if not isinstance(since, int) or isinstance(since, bool) or since < 0:
                return error_response(spec.ERR_DECODE, "bad drops request", "since must be a count >= 0")
            return handler.drops(since)
        if op == "policy":
            ip = request.get("ip")
            if not isinstance(ip, str):
                return error_response(spec.ERR_DECODE, "bad policy request", "ip must be an address")
            return handler.policy(ip)
    except Exception as exc:
        log.exception("agent API op %r failed", op)
        return error_response(spec.ERR_AGENT_INTERNAL, "podnet agent internal error", f"{op}: {exc!r}")
    return error_response(
        spec.ERR_AGENT_PROTOCOL, "unknown API op", f"op {op!r} is not one of cni, status, drops, policy"
    )


class _Connection(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def handle(self) -> None:
        self.request.settimeout(READ_TIMEOUT)
        fds: list[int] = []
        try:
            try:
                raw = _read_request(self.request, fds)
            except OSError as exc:
                log.warning("agent API: reading a request failed: %s", exc)
                return
            response = dispatch(self.server.api_handler, raw, fds[0] if len(fds) == 1 else None)
        finally:
            for fd in fds:  # a second descriptor is never used; all are closed here
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            self.request.sendall(json.dumps(response).encode() + b"\n")
        except (OSError, TypeError, ValueError) as exc:
            log.warning("agent API: answering failed: %s", exc)


def _read_request(sock: socket.socket, fds: list[int]) -> bytes:
    """One request line; descriptors passed with it (SCM_RIGHTS, close-on-exec) land in ``fds``."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_REQUEST:
        data, received, _flags, _addr = socket.recv_fds(sock, 65536, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        fds.extend(received)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if b"\n" in data:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


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
