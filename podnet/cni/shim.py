"""The Python ``podnet`` CNI plugin: a transport to the agent (the fallback of the compiled one).

It sends the CNI_* environment, stdin and the open ``CNI_NETNS`` (SCM_RIGHTS: the plugin runs in
the runtime's mount namespace, where that path exists) to the agent and prints what comes back;
the agent validates and answers (``podnet.cni.answer``), so this shim and the compiled plugin in
``cniplugin/`` behave alike and run the same conformance tests. Only what needs no agent happens
here: VERSION, an ``agentSocket`` that is no string or names no socket, and the errors of an agent
that cannot be reached. Stdlib only, imported at every pod start.
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` pulls in enum and selectors (~3 ms)
import binascii
import errno
import json
import os
import stat
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
    socket_path: str,
    request: Mapping[str, Any],
    timeout: float = DEFAULT_TIMEOUT,
    fd: int | None = None,
    source: str = spec.SOCKET_ENV,
) -> dict[str, Any]:
    """Send one request (with ``fd`` attached, if given), return the decoded response; an
    unreachable agent is code 11 (a path named by the config's ``agentSocket`` that is no socket:
    7, ``spec.socket_problem``; ``source`` says where the path came from), garbage 105.

    The request carries a ``deadline`` (unix seconds): an agent that cannot finish by then gives
    up and undoes its work, so nothing completes after this plugin reported a failure."""
    request = {**request, "deadline": time.time() + timeout - DEADLINE_MARGIN}
    sock = _connect(socket_path, min(timeout, CONNECT_WAIT), source)
    sock.settimeout(timeout)
    try:
        try:
            _send(sock, json.dumps(request).encode() + b"\n", fd)
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
    if not isinstance(response, dict):
        raise spec.CniError(spec.ERR_AGENT_PROTOCOL, "bad answer from podnet agent", f"{raw[:200]!r}")
    return response


def _send(sock: socket.socket, data: bytes, fd: int | None) -> None:
    """Send ``data``; the descriptor rides on the first byte (SCM_RIGHTS)."""
    if fd is not None:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
        data = data[sent:]
    if data:
        sock.sendall(data)


def _connect(socket_path: str, wait: float, source: str) -> socket.socket:
    """A connected socket; a full listen backlog, or an agent that is restarting (its socket
    refuses, or is being replaced), is retried with growing pauses for up to ``wait`` seconds.
    When the first try fails and no socket is there at all, the answer comes at once."""
    deadline = time.monotonic() + wait
    pause = 0.005
    first = True
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return sock
        except OSError as exc:
            sock.close()
            problem = spec.socket_problem(socket_path, source, _found_at(socket_path)) if first else None
            if problem is not None:
                raise problem from None
            first = False
            if exc.errno not in _RETRY_CONNECT or time.monotonic() + pause > deadline:
                raise spec.CniError(
                    spec.ERR_TRY_AGAIN_LATER,
                    "podnet agent is not reachable",
                    f"connect {socket_path}: {exc.strerror or exc}; is the podnet agent running on this "
                    "node?",
                ) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _found_at(path: str) -> str | None:
    """What is at ``path``, in ``spec.socket_problem``'s words; a path that cannot be looked at
    (permissions) counts as a socket, and connecting to it says what is wrong."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "socket"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


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


def open_netns(path: str) -> tuple[int | None, str]:
    """Open ``CNI_NETNS`` here, in the runtime's mount namespace: (fd, "") or (None, why not)."""
    if not path:
        return None, ""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY), ""
    except OSError as exc:
        return None, f"pod network namespace {path} cannot be opened: {exc.strerror}"


def run(env: Mapping[str, str], stdin: bytes, stdout: TextIO) -> int:
    """One plugin invocation; returns the exit status. Testable without a process boundary."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        code, output = spec.version_answer(stdin)
        _emit(stdout, output)
        return code
    head: dict[str, Any] = {}
    try:
        spec.check_size(stdin)
        head = spec.config_head(stdin)
        socket_path, source = spec.locate_agent_socket(head, env)
    except spec.CniError as err:
        _emit(stdout, spec.transport_error(command, head, err))
        print(f"podnet: {command} failed: {err}", file=sys.stderr)
        return 1
    request = {
        "op": "cni",
        "env": {k: env[k] for k in spec.FORWARDED_ENV if k in env},
        "stdin": binascii.b2a_base64(stdin, newline=False).decode(),
    }
    fd, why = open_netns(env.get("CNI_NETNS", ""))
    if why:
        request["netnsError"] = why
    try:
        try:
            timeout = float(env.get("PODNET_CNI_TIMEOUT") or DEFAULT_TIMEOUT)
        except ValueError:
            timeout = DEFAULT_TIMEOUT
        answer = call_agent(socket_path, request, timeout, fd, source)
        output, code, log = answer.get("output"), answer.get("exit"), answer.get("log")
        if not isinstance(code, int) or not isinstance(output, dict | None):
            raise spec.CniError(spec.ERR_AGENT_PROTOCOL, "bad answer from podnet agent", f"{answer!r:.200}")
    except spec.CniError as err:
        output, code, log = spec.transport_error(command, head, err), 1, f"podnet: {command} failed: {err}"
    finally:
        if fd is not None:
            os.close(fd)
    if output is not None:
        _emit(stdout, output)
    if log:
        print(log, file=sys.stderr)
    return code


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
