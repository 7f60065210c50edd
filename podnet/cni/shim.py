"""The ``podnet`` CNI plugin binary: validate the call, forward it to the agent, print the answer.

Everything with state or netlink lives in the warm agent; the shim only imports the stdlib (and
``podnet.cni.spec``, itself stdlib-only) so a pod start costs one Python start-up, not a pyroute2
import. One JSON request per unix-socket connection, one JSON line back (docs/cni.md).
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` pulls in enum and selectors (~3 ms)
import json
import os
import sys

from podnet.cni import spec

TYPE_CHECKING = False  # keep typing out of the per-pod start-up path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

DEFAULT_TIMEOUT = 120.0  # seconds for one agent call; an ADD is normally well under one second
MAX_RESPONSE = 4 * 1024 * 1024


def call_agent(
    socket_path: str, request: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Send one request, return the decoded response; unreachable agent -> code 11, garbage -> 105."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(socket_path)
        except OSError as exc:
            raise spec.CniError(
                spec.ERR_TRY_AGAIN_LATER,
                "podnet agent is not reachable",
                f"connect {socket_path}: {exc.strerror or exc}; is the podnet agent running on this node?",
            ) from None
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
