"""The ``podnet`` CNI plugin binary: validate the call, forward it to the agent, print the answer.

Everything with state or netlink lives in the warm agent; the shim only imports the stdlib (and
``podnet.cni.spec``, itself stdlib-only) so a pod start costs one Python start-up, not a pyroute2
import. One JSON request per unix-socket connection, one JSON line back (docs/cni.md).
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` pulls in enum and selectors (~3 ms)
import errno
import json
import os
import sys
import time

from podnet.cni import spec

TYPE_CHECKING = False  # keep typing out of the per-pod start-up path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

DEFAULT_TIMEOUT = 120.0  # seconds for one agent call; an ADD is normally well under one second
MAX_RESPONSE = 4 * 1024 * 1024
CONNECT_WAIT = 10.0  # how long a busy (backlog full) or restarting agent is waited for
_RETRY_CONNECT = (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOENT)
DEADLINE_MARGIN = 1.0  # the agent must be done this long before the plugin gives up


def call_agent(
    socket_path: str, request: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Send one request, return the decoded response; unreachable agent -> code 11, garbage -> 105.

    The request carries a ``deadline`` (unix seconds): an agent that cannot finish by then gives
    up and undoes its work, so nothing completes after this plugin reported a failure."""
    request = {**request, "deadline": time.time() + timeout - DEADLINE_MARGIN}
    sock = _connect(socket_path, min(timeout, CONNECT_WAIT))
    sock.settimeout(timeout)
    try:
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            raw = _read_line(sock)
        except OSError as exc:
            raise spec.CniError(
                spec.ERR_TRY_AGAIN_LATER, "podnet agent did not answer", f"{socket_path}: {exc}"
            ) from None
    finally:
        sock.close()
    try:
        response = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise spec.CniError(spec.ERR_AGENT_PROTOCOL, "bad answer from podnet agent", str(exc)) from None
    if not isinstance(response, dict) or "ok" not in response:
        raise spec.CniError(spec.ERR_AGENT_PROTOCOL, "bad answer from podnet agent", f"{raw[:200]!r}")
    return response


def _connect(socket_path: str, wait: float) -> socket.socket:
    """A connected socket; a full listen backlog, or an agent that is restarting, is retried with
    growing pauses for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in _RETRY_CONNECT or time.monotonic() + pause > deadline:
                raise spec.CniError(
                    spec.ERR_TRY_AGAIN_LATER,
                    "podnet agent is not reachable",
                    f"connect {socket_path}: {exc.strerror or exc}; is the podnet agent running on this "
                    "node?",
                ) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > MAX_RESPONSE:
            break
    return b"".join(chunks).split(b"\n", 1)[0]


def run(env: Mapping[str, str], stdin: bytes, stdout: TextIO) -> int:
    """One plugin invocation; returns the exit status. Testable without a process boundary."""
    version = spec.CURRENT_VERSION
    command = env.get("CNI_COMMAND", "")
    try:
        invocation = spec.parse_invocation(env, stdin)
        if invocation.command == "VERSION":
            _emit(stdout, spec.version_info())
            return 0
        version = invocation.cni_version
        response = call_agent(
            spec.agent_socket(invocation.config, env),
            invocation.to_request(),
            float(env.get("PODNET_CNI_TIMEOUT") or DEFAULT_TIMEOUT),
        )
        if not response.get("ok"):
            raise spec.CniError(
                int(response.get("code") or spec.ERR_AGENT_INTERNAL),
                str(response.get("msg") or "podnet agent failed"),
                str(response.get("details") or ""),
            )
        if invocation.command == "ADD":
            _emit(stdout, spec.convert_result(response.get("result") or {}, version))
        return 0
    except spec.CniError as err:
        if command == "STATUS" and err.code == spec.ERR_TRY_AGAIN_LATER:
            err = spec.CniError(spec.ERR_PLUGIN_NOT_AVAILABLE, "plugin not available", err.details)
        _emit(stdout, err.to_json(version if version in spec.SUPPORTED_VERSIONS else spec.CURRENT_VERSION))
        print(f"podnet: {command or '?'} failed: {err}", file=sys.stderr)
        return 1


def _emit(stdout: TextIO, payload: Mapping[str, Any]) -> None:
    stdout.write(json.dumps(payload) + "\n")
    stdout.flush()


def main() -> int:
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as exc:
        _emit(sys.stdout, spec.CniError(spec.ERR_IO_FAILURE, "failed to read stdin", str(exc)).to_json())
        return 1
    return run(os.environ, stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
