"""Issue 10.6-10.9: the CNI plugin under concurrency and bad input, through the real binary.

Every bad call gets a spec error that names the field, and leaves nothing made: no record, no
allocation, no veth. A property-based fuzz test (hypothesis) throws random environments and
stdin at the plugin and checks the same.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cninode import CONF, Node, pod_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.cni import spec
from podnet.datapath import endpoint as ep

pytestmark = pytest.mark.kernel


def _env(node: Node, command: str, cid: str, netns_path: str, ifname: str = "eth0") -> dict[str, str]:
    return node.env(command, cid, netns_path, ifname)


def _spawn(node: Node, command: str, cid: str, netns_path: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, str(node.plugin)],
        env=_env(node, command, cid, netns_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(CONF).encode())
    proc.stdin.close()
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any]]:
    assert proc.stdout is not None
    out = proc.stdout.read().decode().strip()
    rc = proc.wait(timeout=120)
    return rc, (json.loads(out) if out else {})


def assert_nothing_made(node: Node) -> None:
    assert node.handler.records() == []
    assert node.allocator.allocated() == {}
    assert node.lxc_links() == []


def test_100_concurrent_adds_then_dels_all_succeed(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pods = [netns_factory(f"p{i}") for i in range(100)]
    adds = [_spawn(node, "ADD", f"c{i}", pod_path(p)) for i, p in enumerate(pods)]
    results = [_finish(p) for p in adds]
    failed = [(i, r) for i, (rc, r) in enumerate(results) if rc != 0]
    assert failed == [], f"{len(failed)} of 100 concurrent ADDs failed, e.g. {failed[:3]}"
    addresses = [r["ips"][0]["address"] for _, r in results]
    assert len(set(addresses)) == 100
    dels = [_spawn(node, "DEL", f"c{i}", pod_path(p)) for i, p in enumerate(pods)]
    failed = [(i, r) for i, (rc, r) in enumerate(_finish(p) for p in dels) if rc != 0]
    assert failed == [], f"{len(failed)} of 100 concurrent DELs failed, e.g. {failed[:3]}"
    assert_nothing_made(node)


@pytest.mark.parametrize(
    "extra",
    [{}, {spec.VALID_ATTACHMENTS_KEY: [{"containerID": 1}]}, {spec.VALID_ATTACHMENTS_KEY: "all"},
     {spec.VALID_ATTACHMENTS_KEY: [{"containerID": "a"}]}],
    ids=["missing", "id-not-a-string", "not-a-list", "no-ifname"],
)  # fmt: skip
def test_malformed_gc_is_an_error_and_deletes_nothing(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str], extra: dict[str, Any]
) -> None:
    node = make_node()
    for cid in ("a", "b"):
        rc, _ = node.cni("ADD", cid, pod_path(netns_factory(cid)))
        assert rc == 0
    rc, out = node.cni("GC", config={**CONF, **extra})
    assert rc == 1 and out is not None and out["code"] == spec.ERR_INVALID_NETCONF, out
    assert spec.VALID_ATTACHMENTS_KEY in out.get("details", "")
    assert sorted(r.container_id for r in node.handler.records()) == ["a", "b"]
    assert len(node.lxc_links()) == 2


def test_a_fifo_as_netns_never_blocks_the_agent(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str], tmp_path: Path
) -> None:
    node = make_node()
    fifo = tmp_path / "not-a-netns"
    os.mkfifo(fifo)
    started = time.monotonic()
    bad = _spawn(node, "ADD", "fifo", str(fifo))
    good = _spawn(node, "ADD", "good", pod_path(netns_factory("good")))
    rc_good, out_good = _finish(good)
    rc_bad, out_bad = _finish(bad)
    assert rc_good == 0, out_good
    assert rc_bad == 1 and out_bad["code"] == spec.ERR_NETNS_NOT_FOUND, out_bad
    assert "not a network namespace" in out_bad["details"]
    assert time.monotonic() - started < 10, "a FIFO held the agent up"
    time.sleep(1)  # nothing may complete after the caller was told it failed
    assert [r.container_id for r in node.handler.records()] == ["good"]


def _check_conf(prev: object) -> dict[str, Any]:
    return {**CONF, "prevResult": prev}


def _check(prev: object) -> bytes:
    return json.dumps(_check_conf(prev)).encode()


BAD_NETCONF, BAD_ENV = spec.ERR_INVALID_NETCONF, spec.ERR_INVALID_ENV


@pytest.mark.parametrize(
    ("command", "ifname", "stdin", "code", "field"),
    [
        ("ADD", "eth0", b"[" * 100000 + b"]" * 100000, spec.ERR_DECODE, "nested"),
        ("ADD", "eth0", json.dumps({**CONF, "pad": "x" * (6 << 20)}).encode(), BAD_NETCONF, "bytes"),
        ("CHECK", "eth0", _check("x"), BAD_NETCONF, "prevResult"),
        ("CHECK", "eth0", _check(1), BAD_NETCONF, "prevResult"),
        ("CHECK", "eth0", _check([1]), BAD_NETCONF, "prevResult"),
        ("CHECK", "eth0", _check({"ips": "x"}), BAD_NETCONF, "prevResult.ips"),
        ("CHECK", "eth0", _check({"ips": [1, 2]}), BAD_NETCONF, "prevResult.ips[0]"),
        ("CHECK", "eth0", _check({"ips": [{"address": []}]}), BAD_NETCONF, "prevResult.ips[0].address"),
        ("ADD", "-eth0", None, BAD_ENV, "CNI_IFNAME"),
        ("ADD", "eth0;rm", None, BAD_ENV, "CNI_IFNAME"),
        ("ADD", "*", None, BAD_ENV, "CNI_IFNAME"),
        ("ADD", "ünïcode", None, BAD_ENV, "CNI_IFNAME"),
        ("ADD", "eth\x01", None, BAD_ENV, "CNI_IFNAME"),
        ("ADD", "eth0", json.dumps({**CONF, "agentSocket": 42}).encode(), BAD_NETCONF, "agentSocket"),
        ("DEL", "eth0", json.dumps({**CONF, "agentSocket": ["/x"]}).encode(), BAD_NETCONF, "agentSocket"),
    ],
    ids=["deep-json", "huge-config", "prev-str", "prev-int", "prev-list", "ips-str", "ips-ints",
         "address-list", "ifname-dash", "ifname-semicolon", "ifname-star", "ifname-unicode",
         "ifname-control", "agent-socket-number", "agent-socket-array"],
)  # fmt: skip
def test_hostile_input_gets_a_spec_error_naming_the_field(
    make_node: Callable[..., Node],
    netns_factory: Callable[[str], str],
    command: str,
    ifname: str,
    stdin: bytes | None,
    code: int,
    field: str,
) -> None:
    node = make_node()
    pod = netns_factory("pod")
    if command == "CHECK":
        assert node.cni("ADD", "c1", pod_path(pod))[0] == 0
    before = (node.handler.records(), node.allocator.allocated(), node.lxc_links())
    rc, out = node.cni(command, "c1", pod_path(pod), ifname=ifname, stdin=stdin)
    assert rc == 1 and out is not None, out
    assert out["code"] == code, out
    assert field in out.get("details", "") + out.get("msg", ""), out
    assert "Traceback" not in json.dumps(out)
    assert (node.handler.records(), node.allocator.allocated(), node.lxc_links()) == before


def test_an_agent_socket_that_names_no_socket_is_code_7_at_once_and_the_right_one_works(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    """As a runtime calls the plugin (no PODNET_AGENT_SOCKET: the config's agentSocket says where
    the agent is): a typo in the path is answered at once with code 7 naming the key and the path,
    nothing is made; the right path starts the pod."""
    node = make_node()
    pod = pod_path(netns_factory("pod"))
    typo = f"{node.sock}x"
    env = {k: v for k, v in node.env("ADD", "c1", pod).items() if k != spec.SOCKET_ENV}
    started = time.monotonic()
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns, str(node.plugin)],
        input=json.dumps({**CONF, "agentSocket": typo}).encode(), env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["code"] == spec.ERR_INVALID_NETCONF, out
    assert out["details"].startswith(f"agentSocket {typo} does not exist"), out
    assert time.monotonic() - started < 5, "the plugin waited for an agent that cannot be there"
    assert_nothing_made(node)
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns, str(node.plugin)],
        input=json.dumps({**CONF, "agentSocket": str(node.sock)}).encode(), env=env, capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r.container_id for r in node.handler.records()] == ["c1"]


_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)
_CONFIGS = st.one_of(
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(
            [
                "cniVersion",
                "name",
                "type",
                "prevResult",
                "agentSocket",
                spec.VALID_ATTACHMENTS_KEY,
                "dns",
                "runtimeConfig",
            ]
        ),
        _JSON,
    ).map(lambda d: json.dumps({**CONF, **d}).encode()),
    st.binary(max_size=200),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from([*spec.COMMANDS, "", "BOGUS"]),
    cid=st.one_of(st.just("fuzz"), _TEXT),
    ifname=st.one_of(st.just("eth0"), _TEXT),
    stdin=_CONFIGS,
)
def test_fuzzed_input_gets_json_answers_and_makes_nothing(
    make_node: Callable[..., Node], command: str, cid: str, ifname: str, stdin: bytes
) -> None:
    """Random env and stdin into the plugin (in-process, against the real agent API): every answer
    is one JSON object with a well-known or podnet code, and a failed call leaves nothing behind."""
    node = _fuzz_node(make_node)
    from io import StringIO

    from podnet.cni import shim

    if "\x00" in cid + ifname:
        return  # the environment cannot carry NUL bytes
    out = StringIO()
    env = _env(node, command, cid, "/run/netns/pnt-fuzz-none", ifname)
    rc = shim.run(env, stdin, out)
    answer = json.loads(out.getvalue()) if out.getvalue().strip() else None
    if rc == 0:
        assert command in ("VERSION", "STATUS", "DEL", "GC", "CHECK") or answer is not None
    else:
        assert answer is not None and isinstance(answer.get("code"), int) and answer.get("msg"), answer
    assert node.handler.records() == [] and node.allocator.allocated() == {}


_NODE: dict[str, Node] = {}


def _fuzz_node(make_node: Callable[..., Node]) -> Node:
    """One node for every example of the fuzz test (made inside the test's fixture scope)."""
    key = str(id(make_node))
    if key not in _NODE:
        _NODE.clear()
        _NODE[key] = make_node()
    return _NODE[key]


def test_work_past_the_callers_deadline_is_undone_and_a_busy_agent_says_so(
    make_node: Callable[..., Node], netns_factory: Callable[[str], str]
) -> None:
    node = make_node()
    pod = netns_factory("late")
    env = node.env("ADD", "late", pod_path(pod))
    request = {
        "op": "cni",
        "env": {k: env[k] for k in spec.FORWARDED_ENV if k in env},
        "stdin": base64.b64encode(json.dumps(CONF).encode()).decode(),
    }

    def send(deadline: float) -> dict[str, Any]:
        """One call as the plugin makes it (the namespace passed as a descriptor), with a deadline."""
        with ep.opened(pod_path(pod)) as netns, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(str(node.sock))
            line = json.dumps({**request, "deadline": deadline}).encode() + b"\n"
            socket.send_fds(conn, [line], [netns.fd])
            return dict(json.loads(conn.makefile("rb").readline()))

    # the lock is held by an earlier call: the newcomer gives up at its deadline, having made nothing
    with node.handler._lock:
        started = time.monotonic()
        busy = send(time.time() + 0.5)["output"]
    assert busy["code"] == spec.ERR_TRY_AGAIN_LATER and "busy" in busy["msg"], busy
    assert 0.4 < time.monotonic() - started < 5
    assert_nothing_made(node)
    # the work finished after the deadline (a deadline already past): it is undone
    late = send(time.time() - 1)["output"]
    assert late["code"] == spec.ERR_TRY_AGAIN_LATER and "deadline" in late["details"], late
    assert_nothing_made(node)
    ok = send(time.time() + 30)
    assert ok["exit"] == 0 and ok["output"]["ips"], ok
