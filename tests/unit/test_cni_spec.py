"""CNI contract, pure: environment and stdin validation, version negotiation, result conversion."""

from __future__ import annotations

import json

import pytest

from podnet.cni import spec

ADD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/run/netns/pod",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}


def netconf(version: str = "1.1.0", **extra: object) -> bytes:
    return json.dumps({"cniVersion": version, "name": "podnet", "type": "podnet", **extra}).encode()


def code_of(env: dict[str, str], stdin: bytes) -> int:
    with pytest.raises(spec.CniError) as info:
        spec.parse_invocation(env, stdin)
    return info.value.code


def test_valid_add_is_parsed() -> None:
    inv = spec.parse_invocation({**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME=web;IgnoreUnknown=1"}, netconf())
    assert (inv.command, inv.container_id, inv.netns, inv.ifname) == (
        "ADD",
        "c0ffee",
        "/run/netns/pod",
        "eth0",
    )
    assert inv.cni_version == "1.1.0"
    request = inv.to_request()
    assert request["op"] == "cni" and request["config"]["name"] == "podnet"
    assert request["args"] == "K8S_POD_NAME=web;IgnoreUnknown=1"


@pytest.mark.parametrize(
    ("command", "drop", "missing"),
    [
        ("ADD", "CNI_CONTAINERID", True),
        ("ADD", "CNI_NETNS", True),
        ("ADD", "CNI_IFNAME", True),
        ("CHECK", "CNI_NETNS", True),
        ("DEL", "CNI_CONTAINERID", True),
        ("DEL", "CNI_IFNAME", True),
        ("DEL", "CNI_NETNS", False),  # DEL may come after the netns is gone
        ("GC", "CNI_CONTAINERID", False),
        ("STATUS", "CNI_IFNAME", False),
    ],
)
def test_required_env_per_command(command: str, drop: str, missing: bool) -> None:
    env = {k: v for k, v in ADD_ENV.items() if k != drop} | {"CNI_COMMAND": command}
    stdin = netconf(**{spec.VALID_ATTACHMENTS_KEY: []}) if command == "GC" else netconf()
    if missing:
        with pytest.raises(spec.CniError) as info:
            spec.parse_invocation(env, stdin)
        assert info.value.code == spec.ERR_INVALID_ENV
        assert drop in info.value.details
    else:
        assert spec.parse_invocation(env, stdin).command == command


@pytest.mark.parametrize(
    "env_patch",
    [
        {"CNI_COMMAND": ""},
        {"CNI_COMMAND": "FROB"},
        {"CNI_IFNAME": "a-very-long-ifname0"},
        {"CNI_IFNAME": "eth/0"},
        {"CNI_CONTAINERID": "-bad id"},
        {"CNI_ARGS": "K8S_POD_NAME"},
    ],
)
def test_invalid_env_is_code_4(env_patch: dict[str, str]) -> None:
    assert code_of({**ADD_ENV, **env_patch}, netconf()) == spec.ERR_INVALID_ENV


def test_env_is_checked_before_stdin() -> None:
    env = {k: v for k, v in ADD_ENV.items() if k != "CNI_NETNS"}
    assert code_of(env, b"{not json") == spec.ERR_INVALID_ENV


@pytest.mark.parametrize("stdin", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_malformed_stdin_is_code_6(stdin: bytes) -> None:
    assert code_of(ADD_ENV, stdin) == spec.ERR_DECODE


@pytest.mark.parametrize(
    ("version", "command", "code"),
    [
        ("0.2.0", "ADD", spec.ERR_INCOMPATIBLE_VERSION),
        ("2.0.0", "ADD", spec.ERR_INCOMPATIBLE_VERSION),
        ("1.x", "ADD", spec.ERR_DECODE),
        ("0.3.1", "CHECK", spec.ERR_INCOMPATIBLE_VERSION),
        ("1.0.0", "GC", spec.ERR_INCOMPATIBLE_VERSION),
        ("1.0.0", "STATUS", spec.ERR_INCOMPATIBLE_VERSION),
    ],
)
def test_version_negotiation_errors(version: str, command: str, code: int) -> None:
    assert code_of({**ADD_ENV, "CNI_COMMAND": command}, netconf(version)) == code


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_every_supported_version_is_accepted_for_add(version: str) -> None:
    assert spec.parse_invocation(ADD_ENV, netconf(version)).cni_version == version


@pytest.mark.parametrize(
    "config",
    [
        {"cniVersion": "1.1.0", "type": "podnet"},
        {"name": "x", "type": "podnet"},
        {"cniVersion": "1.1.0", "name": "-x"},
    ],
)
def test_invalid_netconf_is_code_7(config: dict[str, object]) -> None:
    assert code_of(ADD_ENV, json.dumps(config).encode()) == spec.ERR_INVALID_NETCONF


def test_version_needs_no_stdin_and_lists_versions() -> None:
    inv = spec.parse_invocation({"CNI_COMMAND": "VERSION"}, b"")
    assert inv.command == "VERSION"
    info = spec.version_info()
    assert info == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_agent_socket_precedence() -> None:
    assert spec.agent_socket({}, {}) == spec.DEFAULT_AGENT_SOCKET
    assert spec.agent_socket({"agentSocket": "/a.sock"}, {}) == "/a.sock"
    assert spec.agent_socket({"agentSocket": "/a.sock"}, {spec.SOCKET_ENV: "/b.sock"}) == "/b.sock"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (42, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
        ({"path": "/x"}, "an object"),
        (["/x"], "an array"),
    ],
)
def test_an_agent_socket_that_is_not_a_string_is_code_7_naming_the_key(value: object, kind: str) -> None:
    """The plugin's own check (before any connect) and the agent's say the same."""
    for env in ({}, {spec.SOCKET_ENV: "/b.sock"}):  # the environment does not excuse the config
        with pytest.raises(spec.CniError) as info:
            spec.locate_agent_socket({"agentSocket": value}, env)
        assert info.value.code == spec.ERR_INVALID_NETCONF
        assert (
            info.value.details
            == f"agentSocket must be a string path to the podnet agent's unix socket, not {kind}"
        )
    with pytest.raises(spec.CniError) as agent:
        spec.parse_invocation(ADD_ENV, netconf(agentSocket=value))
    assert (agent.value.code, agent.value.details) == (info.value.code, info.value.details)


@pytest.mark.parametrize(
    ("config", "env", "located"),
    [
        ({}, {}, (spec.DEFAULT_AGENT_SOCKET, "default")),
        ({"agentSocket": None}, {}, (spec.DEFAULT_AGENT_SOCKET, "default")),
        ({"agentSocket": ""}, {}, (spec.DEFAULT_AGENT_SOCKET, "default")),
        ({"agentSocket": "/a.sock"}, {}, ("/a.sock", "agentSocket")),
        ({"agentSocket": "/a.sock"}, {spec.SOCKET_ENV: "/b.sock"}, ("/b.sock", spec.SOCKET_ENV)),
    ],
)
def test_where_the_socket_path_comes_from(
    config: dict[str, object], env: dict[str, str], located: tuple[str, str]
) -> None:
    assert spec.locate_agent_socket(config, env) == located


@pytest.mark.parametrize(
    ("source", "found", "code", "words"),
    [
        ("agentSocket", None, 7, "agentSocket /x/agent.sock does not exist: set agentSocket to"),
        ("agentSocket", "a regular file", 7, "agentSocket /x/agent.sock is a regular file, not a unix"),
        ("agentSocket", "a directory", 7, "agentSocket /x/agent.sock is a directory, not a unix socket"),
        ("default", None, 11, "/x/agent.sock does not exist; is the podnet agent running on this node? (an "
         "agent on another socket is named by agentSocket in the network config)"),
        (spec.SOCKET_ENV, None, 11, "/x/agent.sock (from PODNET_AGENT_SOCKET) does not exist; is the podnet "
         "agent running"),
        (spec.SOCKET_ENV, "a special file", 11, "is a special file, not a unix socket"),
    ],
)  # fmt: skip
def test_a_path_with_no_socket_is_answered_at_once(
    source: str, found: str | None, code: int, words: str
) -> None:
    """A path the config names is the config's fault (7, naming agentSocket); the default or the
    environment's path with nothing there: no agent runs yet (11). A socket that is there is left
    to the connect loop (an agent restarting)."""
    problem = spec.socket_problem("/x/agent.sock", source, found)
    assert problem is not None and problem.code == code and words in problem.details, problem
    assert "agentSocket" in problem.details
    assert spec.socket_problem("/x/agent.sock", source, "socket") is None


def test_error_json_shape() -> None:
    err = spec.CniError(spec.ERR_TRY_AGAIN_LATER, "agent down", "connect refused")
    assert err.to_json("0.4.0") == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "agent down",
        "details": "connect refused",
    }
    assert "details" not in spec.CniError(7, "bad").to_json()


CANONICAL = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "lxc0123456789a", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1500},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/pod"},
    ],
    "ips": [{"address": "10.244.1.5/32", "gateway": "10.244.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1", "mtu": 1450}],
    "dns": {},
}


@pytest.mark.parametrize(
    ("version", "has_ip_version", "has_route_mtu"),
    [
        ("0.3.0", True, False),
        ("0.3.1", True, False),
        ("0.4.0", True, False),
        ("1.0.0", False, False),
        ("1.1.0", False, True),
    ],
)
def test_result_conversion(version: str, has_ip_version: bool, has_route_mtu: bool) -> None:
    out = spec.convert_result(CANONICAL, version)
    assert out["cniVersion"] == version
    ip = out["ips"][0]
    assert ip["address"] == "10.244.1.5/32" and ip["interface"] == 1 and ip["gateway"] == "10.244.1.1"
    assert ("version" in ip) is has_ip_version
    if has_ip_version:
        assert ip["version"] == "4"
    assert ("mtu" in out["routes"][0]) is has_route_mtu
    assert ("mtu" in out["interfaces"][0]) is has_route_mtu
    assert out["interfaces"][1]["sandbox"] == "/run/netns/pod"
    assert CANONICAL["routes"][0]["mtu"] == 1450  # the input is not mutated


def test_ipv6_gets_version_6_in_old_results() -> None:
    result = {"ips": [{"address": "fd00::5/128", "interface": 1}]}
    assert spec.convert_result(result, "0.4.0")["ips"][0]["version"] == "6"


def test_dns_comes_from_the_netconf_with_runtime_config_on_top() -> None:
    conf = {
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        "runtimeConfig": {"dns": {"nameservers": ["10.96.0.53"], "options": ["ndots:5"]}},
    }
    assert spec.dns_of(conf) == {
        "nameservers": ["10.96.0.53"], "search": ["svc.cluster.local"], "options": ["ndots:5"],
    }  # fmt: skip
    assert spec.dns_of({}) == {}
    for bad, field in (({"dns": {"nameservers": "10.0.0.1"}}, "dns.nameservers"),
                       ({"runtimeConfig": {"dns": []}}, "runtimeConfig.dns"),
                       ({"runtimeConfig": [1]}, "runtimeConfig")):  # fmt: skip
        with pytest.raises(spec.CniError) as info:
            spec.dns_of(bad)
        assert info.value.code == spec.ERR_INVALID_NETCONF and field in info.value.details
