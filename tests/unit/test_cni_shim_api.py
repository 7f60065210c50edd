"""Shim <-> agent API over a real unix socket in tmp_path, with a fake handler (no root needed)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet.agent import api
from podnet.cni import answer, install, shim, spec


class FakeHandler:
    def __init__(self) -> None:
        self.requests: list[answer.Call] = []
        self.answer: dict[str, Any] = {"ok": True, "result": {}}
        self.raise_exc: Exception | None = None
        self.netns_inodes: list[int | None] = []

    def cni(self, request: answer.Call) -> dict[str, Any]:
        self.requests.append(request)
        fd = request.netns_fd
        self.netns_inodes.append(os.fstat(fd).st_ino if fd is not None else None)
        if self.raise_exc is not None:
            raise self.raise_exc
        return self.answer

    def status(self) -> dict[str, Any]:
        return {"ok": True, "ready": True}

    def drops(self, since: int) -> dict[str, Any]:
        return {"events": [], "next": since}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[FakeHandler, Path]]:
    handler = FakeHandler()
    path = tmp_path / "run" / "agent.sock"
    server = api.serve(path, handler)
    try:
        yield handler, path
    finally:
        server.close()


def run_shim(env: dict[str, str], config: dict[str, Any] | bytes) -> tuple[int, dict[str, Any] | None]:
    out = io.StringIO()
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    status = shim.run(env, stdin, out)
    text = out.getvalue().strip()
    return status, (json.loads(text) if text else None)


def env_for(command: str, sock: Path) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "abc",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        spec.SOCKET_ENV: str(sock),
    }


CONF = {"cniVersion": "0.4.0", "name": "podnet", "type": "podnet"}
RESULT = {
    "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "10.1.0.5/32", "gateway": "10.1.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400}],
    "dns": {},
}


def test_socket_is_root_only(agent: tuple[FakeHandler, Path]) -> None:
    _handler, path = agent
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_add_forwards_request_and_converts_result(agent: tuple[FakeHandler, Path]) -> None:
    handler, sock = agent
    handler.answer = {"ok": True, "result": RESULT}
    status, out = run_shim(env_for("ADD", sock), CONF)
    assert status == 0 and out is not None
    assert out["cniVersion"] == "0.4.0" and out["ips"][0]["version"] == "4"
    assert "mtu" not in out["routes"][0]
    call = handler.requests[0].invocation
    assert call.command == "ADD"
    assert (call.container_id, call.netns, call.ifname) == ("abc", "/run/netns/x", "eth0")
    assert call.config == CONF
    # /run/netns/x does not exist: no descriptor came, and the agent is told why
    assert handler.requests[0].netns_fd is None
    assert "cannot be opened" in handler.requests[0].netns_error


def test_the_plugin_hands_over_the_namespace_it_opened(
    agent: tuple[FakeHandler, Path], tmp_path: Path
) -> None:
    """The plugin opens CNI_NETNS (in the runtime's mount namespace) and passes the descriptor;
    the agent sees the very file the plugin opened, whatever its own mount namespace shows."""
    handler, sock = agent
    target = tmp_path / "netns-file"
    target.write_text("")
    env = {**env_for("ADD", sock), "CNI_NETNS": str(target)}
    run_shim(env, CONF)
    assert handler.netns_inodes == [os.stat(target).st_ino]
    assert handler.requests[0].netns_error == ""


def test_extra_descriptors_are_closed_and_ignored(agent: tuple[FakeHandler, Path], tmp_path: Path) -> None:
    handler, sock = agent
    files = [os.open(tmp_path, os.O_RDONLY) for _ in range(2)]
    request = {
        "op": "cni",
        "env": env_for("ADD", sock),
        "stdin": __import__("base64").b64encode(json.dumps(CONF).encode()).decode(),
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], files)
        reply = json.loads(conn.makefile("rb").readline())
    for fd in files:
        os.close(fd)
    assert reply["exit"] == 0 and handler.requests[0].netns_fd is None
    assert len(os.listdir("/proc/self/fd")) < 200  # nothing piles up in the agent


@pytest.mark.parametrize(
    "request_",
    [
        {"op": "cni", "env": "x", "stdin": ""},
        {"op": "cni", "env": {"CNI_COMMAND": 5}, "stdin": ""},
        {"op": "cni", "env": {}, "stdin": "!!!"},
        {"op": "cni", "env": {}, "stdin": "", "deadline": "soon"},
        {"op": "cni", "env": {}, "stdin": "", "netnsError": 3},
    ],
)
def test_malformed_plugin_requests_are_protocol_errors(
    agent: tuple[FakeHandler, Path], request_: dict[str, Any]
) -> None:
    handler, sock = agent
    reply = api.request(sock, request_)
    assert reply["exit"] == 1 and reply["output"]["code"] == spec.ERR_AGENT_PROTOCOL, reply
    assert handler.requests == []


def test_agent_error_becomes_spec_error(agent: tuple[FakeHandler, Path]) -> None:
    handler, sock = agent
    handler.answer = {"ok": False, "code": 100, "msg": "IPAM exhausted", "details": "10.1.0.0/30 is full"}
    status, out = run_shim(env_for("ADD", sock), CONF)
    assert status != 0
    assert out == {
        "cniVersion": "0.4.0",
        "code": 100,
        "msg": "IPAM exhausted",
        "details": "10.1.0.0/30 is full",
    }


def test_handler_exception_is_an_error_answer_not_a_dead_server(agent: tuple[FakeHandler, Path]) -> None:
    handler, sock = agent
    handler.raise_exc = RuntimeError("boom")
    status, out = run_shim(env_for("DEL", sock), CONF)
    assert status != 0 and out is not None and out["code"] == spec.ERR_AGENT_INTERNAL
    assert "boom" in out["details"]
    handler.raise_exc = None
    status, out = run_shim(env_for("DEL", sock), CONF)
    assert (status, out) == (0, None)  # DEL prints nothing on success


def test_unreachable_agent_is_try_again_later(tmp_path: Path) -> None:
    status, out = run_shim(env_for("ADD", tmp_path / "none.sock"), CONF)
    assert status != 0 and out is not None and out["code"] == spec.ERR_TRY_AGAIN_LATER
    conf = {**CONF, "cniVersion": "1.1.0"}
    status, out = run_shim(env_for("STATUS", tmp_path / "none.sock"), conf)
    assert status != 0 and out is not None and out["code"] == spec.ERR_PLUGIN_NOT_AVAILABLE


def test_malformed_stdin_never_reaches_agent(agent: tuple[FakeHandler, Path]) -> None:
    handler, sock = agent
    status, out = run_shim(env_for("ADD", sock), b"{oops")
    assert status != 0 and out is not None and out["code"] == spec.ERR_DECODE
    assert handler.requests == []


def test_version_output(tmp_path: Path) -> None:
    status, out = run_shim({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"})
    assert status == 0 and out == {**spec.version_info(), "cniVersion": "1.0.0"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{nope\n", spec.ERR_DECODE),
        (b"[]\n", spec.ERR_DECODE),
        (b'{"op": "frob"}\n', spec.ERR_AGENT_PROTOCOL),
    ],
)
def test_server_rejects_bad_requests(agent: tuple[FakeHandler, Path], raw: bytes, code: int) -> None:
    _handler, sock = agent
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(sock))
        conn.sendall(raw)
        answer = json.loads(conn.makefile("rb").readline())
    assert answer["ok"] is False and answer["code"] == code


def test_status_op(agent: tuple[FakeHandler, Path]) -> None:
    _handler, sock = agent
    assert shim.call_agent(str(sock), {"op": "status"}, timeout=5) == {"ok": True, "ready": True}


def test_concurrent_requests_are_all_answered(agent: tuple[FakeHandler, Path]) -> None:
    _handler, sock = agent
    answers: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(shim.call_agent(str(sock), {"op": "status"}, timeout=5))
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(answers) == 8 and all(a["ok"] for a in answers)


def test_second_server_on_live_socket_is_refused(agent: tuple[FakeHandler, Path]) -> None:
    handler, sock = agent
    with pytest.raises(RuntimeError, match="in use"):
        api.serve(sock, handler)


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # file stays, nobody listens
    with api.serve(path, FakeHandler()):
        assert shim.call_agent(str(path), {"op": "status"}, timeout=5)["ok"] is True
    assert not path.exists()


@pytest.mark.parametrize("kind", ["compiled", "python"])
def test_install_writes_plugin_and_conflist(tmp_path: Path, kind: str) -> None:
    done = install.install_cni(tmp_path / "bin", tmp_path / "net.d", socket="/run/x/agent.sock", kind=kind)
    assert done.binary == tmp_path / "bin" / "podnet" and done.kind == kind
    assert os.access(done.binary, os.X_OK)
    # the launcher runs on its own, as a runtime would exec it, and answers VERSION
    res = subprocess.run(
        [str(done.binary)], input=b"{}", env={"CNI_COMMAND": "VERSION"}, capture_output=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    assert "1.1.0" in json.loads(res.stdout)["supportedVersions"]
    conf = json.loads(done.conflist.read_text())
    # 1.0.0: libcni 1.1.x (podman, containerd, cnitool) cannot parse 1.1.0 results
    assert conf["cniVersion"] == "1.0.0" and conf["plugins"][0]["type"] == "podnet"
    assert conf["plugins"][0]["agentSocket"] == "/run/x/agent.sock"
    again = install.install_cni(tmp_path / "bin", tmp_path / "net.d", socket="/run/x/agent.sock", kind=kind)
    assert again == done and json.loads(again.conflist.read_text()) == conf


def test_install_cni_command_writes_both_files(tmp_path: Path) -> None:
    from podnet.cli import main

    assert main(["install-cni", "--bin-dir", str(tmp_path / "b"), "--conf-dir", str(tmp_path / "c")]) == 0
    assert (tmp_path / "b" / "podnet").read_bytes() == install.compiled_plugin().read_bytes()
    conf = json.loads((tmp_path / "c" / "05-podnet.conflist").read_text())
    assert conf["plugins"] == [{"type": "podnet"}]  # default socket: nothing to say


def test_install_refuses_an_unknown_cni_version_before_writing(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match=r"cniVersion '2\.0\.0' is not one of"):
        install.install_cni(tmp_path / "bin", tmp_path / "net.d", cni_version="2.0.0")
    assert not (tmp_path / "net.d").exists()
    done = install.install_cni(tmp_path / "bin", tmp_path / "net.d", cni_version="1.1.0")
    assert json.loads(done.conflist.read_text())["cniVersion"] == "1.1.0"
