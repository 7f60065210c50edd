"""Both plugin binaries (compiled and Python) against one agent API: what each decides alone
(VERSION, size limit, an unreachable or garbled agent) and what it forwards must be the same."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cni_shim_api import CONF, RESULT, FakeHandler

from podnet.agent import api
from podnet.cni import spec


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[FakeHandler, Path]]:
    handler = FakeHandler()
    path = tmp_path / "agent.sock"
    with api.serve(path, handler):
        yield handler, path


def call(plugin: Path, env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run([str(plugin)], input=stdin, env=env, capture_output=True, timeout=60)
    out = proc.stdout.decode().strip()
    assert out.count("\n") == 0, out  # one JSON line at most
    return proc.returncode, (json.loads(out) if out else None), proc.stderr.decode()


def env_for(command: str, sock: Path, netns: str = "") -> dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0", spec.SOCKET_ENV: str(sock)}
    if netns:
        env["CNI_NETNS"] = netns
    return env


def test_version_is_answered_without_the_agent_in_the_configs_version(plugin: Path, tmp_path: Path) -> None:
    env = env_for("VERSION", tmp_path / "none.sock")
    for stdin, speaks in (
        (b"", "1.1.0"),
        (b'{"cniVersion": "1.0.0"}', "1.0.0"),
        (b'{"cniVersion": "7"}', "1.1.0"),
    ):
        assert call(plugin, env, stdin)[:2] == (0, {**spec.version_info(), "cniVersion": speaks})
    rc, out, _ = call(plugin, env_for("VERSION", tmp_path / "none.sock"), b"[1, 2]")
    assert rc == 1 and out is not None and out["code"] == spec.ERR_DECODE


@pytest.mark.parametrize(("command", "code"), [("ADD", spec.ERR_TRY_AGAIN_LATER), ("STATUS", 50)])
def test_an_unreachable_agent_is_worded_in_the_configs_version(
    plugin: Path, tmp_path: Path, command: str, code: int
) -> None:
    conf = json.dumps({**CONF, "cniVersion": "1.1.0"}).encode()
    env = {**env_for(command, tmp_path / "none.sock"), "PODNET_CNI_TIMEOUT": "0.2"}
    rc, out, err = call(plugin, env, conf)
    assert rc == 1 and out is not None and (out["code"], out["cniVersion"]) == (code, "1.1.0"), out
    assert "is the podnet agent running" in out["details"] and err
    rc, out, _ = call(plugin, env, b'{"cniVersion": "9.9.9"}')  # a version podnet does not speak
    assert out is not None and out["cniVersion"] == spec.CURRENT_VERSION


def test_a_config_over_the_limit_is_refused_before_it_is_sent(
    plugin: Path, agent: tuple[FakeHandler, Path]
) -> None:
    handler, sock = agent
    big = json.dumps({**CONF, "pad": "x" * spec.MAX_CONFIG}).encode()
    rc, out, _ = call(plugin, env_for("ADD", sock), big)
    assert rc == 1 and out is not None and out["code"] == spec.ERR_INVALID_NETCONF
    assert handler.requests == []


def test_the_agents_answer_is_printed_as_given(
    plugin: Path, agent: tuple[FakeHandler, Path], tmp_path: Path
) -> None:
    handler, sock = agent
    target = tmp_path / "ns"
    target.write_text("")
    handler.answer = {"ok": True, "result": RESULT}
    rc, out, _ = call(plugin, env_for("ADD", sock, str(target)), json.dumps(CONF).encode())
    assert rc == 0 and out is not None and out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"
    assert handler.netns_inodes == [target.stat().st_ino]  # the descriptor the plugin opened
    handler.answer = {"ok": False, "code": 100, "msg": "IPAM exhausted", "details": "full"}
    rc, out, err = call(plugin, env_for("ADD", sock, str(tmp_path / "gone")), json.dumps(CONF).encode())
    assert (rc, out) == (1, {"cniVersion": "0.4.0", "code": 100, "msg": "IPAM exhausted", "details": "full"})
    assert "IPAM exhausted" in err
    assert handler.netns_inodes[-1] is None and "cannot be opened" in handler.requests[-1].netns_error
    handler.answer = {"ok": True, "result": {}}
    assert call(plugin, env_for("DEL", sock), json.dumps(CONF).encode())[:2] == (0, None)


@pytest.mark.parametrize("reply", [b"garbage\n", b'{"exit": "x"}\n', b""])
def test_a_garbled_agent_is_a_protocol_error(plugin: Path, tmp_path: Path, reply: bytes) -> None:
    path = tmp_path / "bad.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1 << 20)
            conn.sendall(reply)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        rc, out, _ = call(plugin, env_for("ADD", path), json.dumps(CONF).encode())
    finally:
        thread.join(timeout=10)
        server.close()
    assert rc == 1 and out is not None
    assert out["code"] == spec.ERR_AGENT_PROTOCOL, out


@pytest.mark.parametrize("stdin", [b"{not json", b"[1]", b"null", b'{"cniVersion": NaN}', b"{} {}", b""])
def test_a_config_that_is_not_a_json_object_is_code_6_even_without_an_agent(
    plugin: Path, tmp_path: Path, stdin: bytes
) -> None:
    rc, out, err = call(plugin, env_for("ADD", tmp_path / "none.sock"), stdin)
    assert rc == 1 and out is not None and out["code"] == spec.ERR_DECODE, out
    assert "failed to decode" in out["msg"] and err


# ---- where the agent is: agentSocket (issue 29) --------------------------------------------------


def timed(plugin: Path, env: dict[str, str], conf: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    rc, out, _ = call(plugin, env, json.dumps(conf).encode())
    assert out is not None
    return rc, out, time.monotonic() - started


@pytest.mark.parametrize(
    ("value", "kind"), [(42, "a number"), (["/run/a.sock"], "an array"), (True, "a boolean")]
)
def test_an_agent_socket_that_is_not_a_string_is_code_7_at_once(
    plugin: Path, agent: tuple[FakeHandler, Path], value: object, kind: str
) -> None:
    """Refused by the plugin itself, in the config's version, even with a live agent at hand."""
    handler, sock = agent
    rc, out, took = timed(plugin, env_for("ADD", sock), {**CONF, "cniVersion": "1.0.0", "agentSocket": value})
    assert rc == 1 and out == {
        "cniVersion": "1.0.0",
        "code": spec.ERR_INVALID_NETCONF,
        "msg": "invalid network config",
        "details": f"agentSocket must be a string path to the podnet agent's unix socket, not {kind}",
    }
    assert handler.requests == [] and took < 5


def _no_env(command: str) -> dict[str, str]:
    """A runtime's environment: the socket comes from the config or is the default."""
    env = env_for(command, Path("/unused"))
    del env[spec.SOCKET_ENV]
    return env


@pytest.mark.parametrize("what", ["missing", "a regular file", "a directory"])
def test_an_agent_socket_naming_no_socket_is_code_7_at_once(plugin: Path, tmp_path: Path, what: str) -> None:
    path = tmp_path / "agent.sock"
    if what == "a regular file":
        path.write_text("")
    elif what == "a directory":
        path.mkdir()
    found = "does not exist" if what == "missing" else f"is {what}, not a unix socket"
    for command in ("ADD", "DEL"):
        rc, out, took = timed(plugin, _no_env(command), {**CONF, "agentSocket": str(path)})
        assert rc == 1 and (out["code"], out["msg"]) == (
            spec.ERR_INVALID_NETCONF,
            "invalid network config",
        ), out
        assert out["details"].startswith(
            f"agentSocket {path} {found}: set agentSocket to the podnet agent's socket"
        )
        assert took < 5, f"{command} took {took:.1f}s to say so"


def test_a_missing_socket_from_the_environment_or_the_default_is_code_11_at_once(
    plugin: Path, tmp_path: Path
) -> None:
    """No agent has made its socket yet: try again later, said at once (no 10 s of retries)."""
    rc, out, took = timed(
        plugin, env_for("ADD", tmp_path / "none.sock"), {**CONF, "agentSocket": "/elsewhere"}
    )
    assert rc == 1 and out["code"] == spec.ERR_TRY_AGAIN_LATER and took < 5, out
    assert f"{tmp_path / 'none.sock'} (from PODNET_AGENT_SOCKET) does not exist" in out["details"]
    assert "is the podnet agent running on this node?" in out["details"] and "agentSocket" in out["details"]
    if Path(spec.DEFAULT_AGENT_SOCKET).exists():
        return  # an agent runs on this machine: the default path is not ours to test
    for command, code in (("ADD", spec.ERR_TRY_AGAIN_LATER), ("STATUS", spec.ERR_PLUGIN_NOT_AVAILABLE)):
        rc, out, took = timed(plugin, _no_env(command), {**CONF, "cniVersion": "1.1.0"})
        assert rc == 1 and out["code"] == code and took < 5, out
        assert out["details"].startswith(f"{spec.DEFAULT_AGENT_SOCKET} does not exist; is the podnet agent")
        assert "named by agentSocket in the network config" in out["details"]


def test_a_socket_that_refuses_is_waited_for_as_an_agent_restarting(plugin: Path, tmp_path: Path) -> None:
    """A stale socket (an agent killed) refuses until the new agent replaces it: the call waits
    and is served, through the moment the socket file is gone, with agentSocket from the config."""
    path = tmp_path / "agent.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: ECONNREFUSED
    stale.close()
    handler = FakeHandler()
    servers: list[api.ApiServer] = []
    later = threading.Timer(0.7, lambda: servers.append(api.serve(path, handler)))
    later.start()
    try:
        rc, out, _ = call(plugin, _no_env("DEL"), json.dumps({**CONF, "agentSocket": str(path)}).encode())
    finally:
        later.join()
        for server in servers:
            server.close()
    assert (rc, out) == (0, None) and len(handler.requests) == 1
