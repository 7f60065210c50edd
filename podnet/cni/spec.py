"""The CNI 1.1 contract in pure, stdlib-only Python: environment, network config, results, errors.

The shim imports this module on every pod start, so it must stay cheap: ``json``, ``re`` and
nothing from podnet that pulls pyroute2 or YAML. The agent works in one canonical result form
(CNI 1.1.0); ``convert_result`` turns it into what the caller's ``cniVersion`` expects
(0.3.x/0.4.0 carry ``"version"`` on each IP, only 1.1.0 knows route ``mtu``/``scope``...).
"""

from __future__ import annotations

import json
import re

TYPE_CHECKING = False  # typing costs ~3 ms at every pod start: only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

CURRENT_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Well-known error codes (CNI SPEC "Well-known Error Codes").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO_FAILURE = 5
ERR_DECODE = 6
ERR_INVALID_NETCONF = 7
ERR_TRY_AGAIN_LATER = 11
ERR_PLUGIN_NOT_AVAILABLE = 50  # STATUS: cannot service ADD
ERR_PLUGIN_LIMITED = 51  # STATUS: not available and existing pods may be degraded
# podnet's own codes (100+), documented in docs/cni.md.
ERR_IPAM_EXHAUSTED = 100
ERR_NETNS_NOT_FOUND = 101
ERR_INTERFACE_SETUP = 102
ERR_CHECK_FAILED = 103
ERR_INJECTED = 104
ERR_AGENT_PROTOCOL = 105
ERR_AGENT_INTERNAL = 199

DEFAULT_AGENT_SOCKET = "/run/podnet/agent.sock"
SOCKET_ENV = "PODNET_AGENT_SOCKET"
AGENT_SOCKET_KEY = "agentSocket"  # the netconf key naming the agent socket
SOCKET_DEFAULT = "default"  # locate_agent_socket: the path is DEFAULT_AGENT_SOCKET
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
# The environment a plugin forwards to the agent; everything else in its environment stays with it.
FORWARDED_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

# Which CNI_* variables each command needs (CNI SPEC "Parameters"); CNI_COMMAND is always needed.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}
# The oldest config version that may ask for a command.
MIN_VERSION = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}

MAX_CONFIG = 1 << 20  # bytes of network config on stdin; a larger one is refused (code 7)
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")  # ASCII: what every tool can quote
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CniError(Exception):
    """An error the plugin reports to the runtime as ``{"cniVersion","code","msg","details"}``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = CURRENT_VERSION) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class Invocation:
    """One plugin call as the runtime made it: CNI_* environment plus the decoded network config.

    A plain class rather than a dataclass: importing ``dataclasses`` costs ~8 ms per pod start.
    """

    __slots__ = ("args", "command", "config", "container_id", "ifname", "netns", "path")

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: str = "",
        path: str = "",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.config = config if config is not None else {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Invocation) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__
        )

    def __repr__(self) -> str:
        return f"Invocation({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", CURRENT_VERSION))

    def to_request(self) -> dict[str, Any]:
        """The agent wire request (docs/cni.md "Wire protocol")."""
        return {
            "op": "cni",
            "command": self.command,
            "containerID": self.container_id,
            "netns": self.netns,
            "ifname": self.ifname,
            "args": self.args,
            "path": self.path,
            "config": self.config,
        }


def parse_version(text: object) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; anything else is a decode error (code 6)."""
    match = _VERSION.match(text) if isinstance(text, str) else None
    if match is None:
        raise CniError(ERR_DECODE, "failed to decode CNI version", f"{text!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


def check_env(command: str, env: Mapping[str, str]) -> None:
    """Raise code 4 naming every missing or malformed CNI_* variable ``command`` needs."""
    problems = [f"{name} is not set" for name in REQUIRED_ENV[command] if not env.get(name)]
    cid = env.get("CNI_CONTAINERID", "")
    if cid and not _CONTAINER_ID.match(cid):
        problems.append(f"CNI_CONTAINERID {cid!r} must be alphanumeric, '_', '.' or '-'")
    ifname = env.get("CNI_IFNAME", "")
    if ifname and not valid_ifname(ifname):
        problems.append(
            f"CNI_IFNAME {ifname!r} is not a valid interface name (1-15 ASCII letters, digits, '_', '.', "
            "'-', starting with a letter or digit)"
        )
    try:
        parse_cni_args(env.get("CNI_ARGS", ""))
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise CniError(ERR_INVALID_ENV, "invalid CNI environment variables", "; ".join(problems))


def valid_ifname(name: str) -> bool:
    """A Linux interface name a pod may get: 1-15 ASCII letters, digits, '_', '.', '-', starting
    with a letter or digit (the kernel allows more; runtimes and shells do not cope with it)."""
    return _IFNAME.match(name) is not None


def parse_cni_args(text: str) -> dict[str, str]:
    """``"K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"`` -> dict; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"CNI_ARGS entry {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def check_size(stdin: bytes) -> None:
    """A config larger than ``MAX_CONFIG`` is refused (code 7), by the plugin before it is sent."""
    if len(stdin) > MAX_CONFIG:
        raise CniError(
            ERR_INVALID_NETCONF,
            "invalid network config",
            f"the network config is {len(stdin)} bytes; podnet accepts at most {MAX_CONFIG} bytes",
        )


def parse_config(command: str, stdin: bytes) -> dict[str, Any]:
    """Decode and validate the network config on stdin (codes 6, 7, 1)."""
    check_size(stdin)
    try:
        config = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(ERR_DECODE, "failed to decode network config from stdin", str(exc)) from None
    except RecursionError:
        raise CniError(
            ERR_DECODE, "failed to decode network config from stdin", "the JSON is nested too deeply"
        ) from None
    if not isinstance(config, dict):
        raise CniError(ERR_DECODE, "failed to decode network config", "stdin is not a JSON object")
    if command == "VERSION":
        return config
    version_text = config.get("cniVersion")
    if version_text is None:
        raise CniError(ERR_INVALID_NETCONF, "invalid network config", "cniVersion is missing")
    version = parse_version(version_text)
    if version_text not in SUPPORTED_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            f"config cniVersion {version_text} is not one of {', '.join(SUPPORTED_VERSIONS)}",
        )
    if command in MIN_VERSION and version < MIN_VERSION[command]:
        need = ".".join(map(str, MIN_VERSION[command]))
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            f"config version {version_text} does not allow {command} (needs {need} or later)",
        )
    name = config.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise CniError(ERR_INVALID_NETCONF, "invalid network config", f"network name {name!r} is not valid")
    socket_path = config.get(AGENT_SOCKET_KEY)
    if socket_path is not None and not isinstance(socket_path, str):
        raise agent_socket_type_error(socket_path)
    if "prevResult" in config:
        prev_result_ips(config)
    if command == "GC":
        valid_attachments(config)
    if command == "ADD":
        dns_of(config)
    return config


def _bad(field: str, what: str) -> CniError:
    return CniError(ERR_INVALID_NETCONF, "invalid network config", f"{field} {what}")


def prev_result_ips(config: Mapping[str, Any]) -> list[str]:
    """The addresses of ``prevResult.ips`` (CIDR text); code 7 naming the field when malformed."""
    prev = config.get("prevResult")
    if prev is None:
        return []
    if not isinstance(prev, dict):
        raise _bad("prevResult", f"must be an object (a CNI result), not {type(prev).__name__}")
    ips = prev.get("ips", [])
    if not isinstance(ips, list):
        raise _bad("prevResult.ips", f"must be a list, not {type(ips).__name__}")
    found = []
    for i, item in enumerate(ips):
        if not isinstance(item, dict):
            raise _bad(f"prevResult.ips[{i}]", f"must be an object, not {type(item).__name__}")
        address = item.get("address")
        if not isinstance(address, str) or "/" not in address:
            raise _bad(
                f"prevResult.ips[{i}].address", f"must be an address with a prefix length, not {address!r}"
            )
        found.append(address)
    return found


_DNS_FIELDS = {"nameservers": list, "domain": str, "search": list, "options": list}


def dns_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The result's ``dns``: the network config's ``dns``, with ``runtimeConfig.dns`` (what the
    runtime asks for this pod, e.g. the cluster's DNS service) on top, field by field, as the
    reference plugins do. Malformed fields are code 7 naming them."""
    runtime = config.get("runtimeConfig") or {}
    if not isinstance(runtime, dict):
        raise _bad("runtimeConfig", f"must be an object, not {type(runtime).__name__}")
    merged: dict[str, Any] = {}
    for where, source in (("dns", config.get("dns")), ("runtimeConfig.dns", runtime.get("dns"))):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise _bad(where, f"must be an object, not {type(source).__name__}")
        for field, kind in _DNS_FIELDS.items():
            value = source.get(field)
            if value is None:
                continue
            if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
                expected = "a list of strings" if kind is list else "a string"
                raise _bad(f"{where}.{field}", f"must be {expected}")
            merged[field] = value
    return merged


def default_route_of(config: Mapping[str, Any]) -> bool | None:
    """The netconf's ``defaultRoute``: True, this attachment takes the pod's default route (from
    an attachment that had it); False, it never does; absent (None), the container's first
    attachment owns it. Anything else is code 7."""
    value = config.get("defaultRoute")
    if value is None or isinstance(value, bool):
        return value
    raise _bad("defaultRoute", f"must be true or false, not {json.dumps(value)}")


def valid_attachments(config: Mapping[str, Any]) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments`` as (containerID, ifname) pairs. Required, and a list of
    objects with string ``containerID`` and ``ifname``: a GC that cannot say what is valid must
    delete nothing (code 7)."""
    items = config.get(VALID_ATTACHMENTS_KEY)
    if items is None:
        raise _bad(
            VALID_ATTACHMENTS_KEY, "is missing; GC deletes only what is not listed, so it needs the list"
        )
    if not isinstance(items, list):
        raise _bad(VALID_ATTACHMENTS_KEY, f"must be a list, not {type(items).__name__}")
    found = set()
    for i, item in enumerate(items):
        cid = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str) or not cid or not ifname:
            raise _bad(
                f"{VALID_ATTACHMENTS_KEY}[{i}]", f"must have string containerID and ifname, not {item!r}"
            )
        found.add((cid, ifname))
    return found


def parse_invocation(env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Everything the shim validates before talking to the agent: env first (4), then stdin (6/7/1)."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        detail = "CNI_COMMAND is not set" if not command else f"CNI_COMMAND {command!r} is not supported"
        raise CniError(ERR_INVALID_ENV, "invalid CNI environment variables", f"{detail}; one of {COMMANDS}")
    check_env(command, env)
    config = parse_config(command, stdin) if stdin.strip() or command != "VERSION" else {}
    return Invocation(
        command=command,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=env.get("CNI_ARGS", ""),
        path=env.get("CNI_PATH", ""),
        config=config,
    )


def agent_socket(config: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The agent socket: env ``PODNET_AGENT_SOCKET``, else netconf ``agentSocket``, else the default."""
    return locate_agent_socket(config, env)[0]


def locate_agent_socket(config: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, str]:
    """(the agent socket, where its path came from: ``PODNET_AGENT_SOCKET``, ``agentSocket`` or
    ``default``). An ``agentSocket`` that is not a string is code 7 naming the key, whatever the
    environment says (null and "" mean the key is not given)."""
    value = config.get(AGENT_SOCKET_KEY)
    if value is not None and not isinstance(value, str):
        raise agent_socket_type_error(value)
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV], SOCKET_ENV
    if value:
        return value, AGENT_SOCKET_KEY
    return DEFAULT_AGENT_SOCKET, SOCKET_DEFAULT


def agent_socket_type_error(value: Any) -> CniError:
    return CniError(
        ERR_INVALID_NETCONF,
        "invalid network config",
        f"{AGENT_SOCKET_KEY} must be a string path to the podnet agent's unix socket, not {json_kind(value)}",
    )


def json_kind(value: Any) -> str:
    """``a number``, ``an object``...: a JSON value's type as the compiled plugin words it too."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "null"


def socket_problem(path: str, source: str, found: str | None) -> CniError | None:
    """Why ``path`` cannot be the agent's socket, answered at once (no waiting for an agent that
    will never listen there), or None when a socket is there (an agent that refuses is restarting:
    the plugin waits for it). ``found`` is what the plugin saw at ``path``: None for nothing, else
    ``socket``, ``a directory``, ``a regular file`` or ``a special file``.

    A path the network config names is the config's fault (code 7 naming ``agentSocket``); the
    default path, or ``PODNET_AGENT_SOCKET``'s, missing means no agent runs here yet (code 11)."""
    if found == "socket":
        return None
    what = "does not exist" if found is None else f"is {found}, not a unix socket"
    if source == AGENT_SOCKET_KEY:
        return CniError(
            ERR_INVALID_NETCONF,
            "invalid network config",
            f"{AGENT_SOCKET_KEY} {path} {what}: set {AGENT_SOCKET_KEY} to the podnet agent's socket "
            f"(the agent's own {AGENT_SOCKET_KEY} setting), or remove the key for the default "
            f"{DEFAULT_AGENT_SOCKET}",
        )
    if source == SOCKET_ENV:
        where, hint = f"{path} (from {SOCKET_ENV})", f"{SOCKET_ENV} overrides the config's {AGENT_SOCKET_KEY}"
    else:
        where, hint = path, f"an agent on another socket is named by {AGENT_SOCKET_KEY} in the network config"
    return CniError(
        ERR_TRY_AGAIN_LATER,
        "podnet agent is not reachable",
        f"{where} {what}; is the podnet agent running on this node? ({hint})",
    )


def version_info() -> dict[str, Any]:
    """The VERSION command's output."""
    return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


# ---- what a plugin binary decides without the agent (the compiled plugin mirrors these) --------


def version_answer(stdin: bytes) -> tuple[int, dict[str, Any]]:
    """VERSION, answered by the plugin itself (runtimes ask before every ADD and DEL): stdin is
    empty or a JSON object, anything else is code 6. The answer speaks the config's
    ``cniVersion`` when it is one podnet knows (what the runtime parses), else the newest."""
    config: Any = {}
    if stdin.strip():
        try:
            config = json.loads(stdin)
        except (UnicodeDecodeError, ValueError, RecursionError):
            config = None
        if not isinstance(config, dict):
            error = CniError(
                ERR_DECODE, "failed to decode network config from stdin", "stdin is not a JSON object"
            )
            return 1, error.to_json()
    asked = config.get("cniVersion")
    return 0, {**version_info(), "cniVersion": asked if asked in SUPPORTED_VERSIONS else CURRENT_VERSION}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def config_head(stdin: bytes) -> dict[str, Any]:
    """``cniVersion`` (when a string) and ``agentSocket`` (as given: ``locate_agent_socket``
    checks it) of the config: a plugin needs them to find the agent and to word an error when the
    agent cannot answer. A config that is not a JSON object is code 6 here already (without the
    agent); everything else is the agent's to validate."""
    try:
        config = json.loads(stdin, parse_constant=_no_constants)  # NaN/Infinity: not JSON (as Go)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = "the JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CniError(ERR_DECODE, "failed to decode network config from stdin", detail) from None
    if not isinstance(config, dict):
        raise CniError(ERR_DECODE, "failed to decode network config from stdin", "stdin is not a JSON object")
    head = {"cniVersion": config["cniVersion"]} if isinstance(config.get("cniVersion"), str) else {}
    if config.get(AGENT_SOCKET_KEY) is not None:
        head[AGENT_SOCKET_KEY] = config[AGENT_SOCKET_KEY]
    return head


def transport_error(command: str, head: Mapping[str, Any], err: CniError) -> dict[str, Any]:
    """The error JSON when the agent cannot be reached or answers garbage: in the config's
    version where that is one podnet speaks; STATUS says "plugin not available" (code 50)."""
    if command == "STATUS" and err.code == ERR_TRY_AGAIN_LATER:
        err = CniError(ERR_PLUGIN_NOT_AVAILABLE, "plugin not available", err.details)
    version = head.get("cniVersion")
    return err.to_json(version if version in SUPPORTED_VERSIONS else CURRENT_VERSION)


_IFACE_FIELDS_1_1 = ("mtu", "socketPath", "pciID")
_ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")


def convert_result(result: Mapping[str, Any], cni_version: str) -> dict[str, Any]:
    """Turn a canonical 1.1.0 result into the form of ``cni_version`` (one of SUPPORTED_VERSIONS)."""
    if cni_version not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI version", f"cannot emit {cni_version}")
    modern = parse_version(cni_version) >= (1, 1, 0)
    out: dict[str, Any] = {"cniVersion": cni_version}
    interfaces = [dict(i) for i in result.get("interfaces", [])]
    ips = [dict(ip) for ip in result.get("ips", [])]
    routes = [dict(r) for r in result.get("routes", [])]
    if not modern:
        for item in interfaces:
            for key in _IFACE_FIELDS_1_1:
                item.pop(key, None)
        for item in routes:
            for key in _ROUTE_FIELDS_1_1:
                item.pop(key, None)
    if parse_version(cni_version) < (1, 0, 0):
        for item in ips:
            item["version"] = "6" if ":" in str(item.get("address", "")) else "4"
    else:
        for item in ips:
            item.pop("version", None)
    out["interfaces"] = interfaces
    out["ips"] = ips
    if routes:
        out["routes"] = routes
    out["dns"] = dict(result.get("dns") or {})
    return out
