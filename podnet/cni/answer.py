"""The agent's side of the plugin protocol: one CNI call in, exactly what the plugin prints out.

The plugin binaries (the compiled ``podnet`` plugin and the Python shim) are transports: they send
the CNI_* environment, stdin and the open ``CNI_NETNS`` descriptor (SCM_RIGHTS) and print what
comes back. Validation, the call itself, error codes and the result's version form are decided
here, once, so no two plugins can drift apart (docs/cni.md "Wire protocol").
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from podnet.cni import spec


@dataclass(frozen=True)
class Call:
    """A validated CNI call as the agent's handler gets it."""

    invocation: spec.Invocation
    netns_fd: int | None  # the pod namespace the plugin opened and passed; None when it did not
    netns_error: str  # why the plugin could not open CNI_NETNS ("" when it did or none was given)
    deadline: float  # unix seconds; 0: none given


class Handler(Protocol):
    """What runs a call: ``{"ok": True, "result": {...}}`` or ``{"ok": False, "code", "msg", "details"}``."""

    def cni(self, call: Call) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Answer:
    exit: int
    output: dict[str, Any] | None  # printed on the plugin's stdout as one JSON line
    log: str = ""  # printed on the plugin's stderr

    def to_json(self) -> dict[str, Any]:
        return {"exit": self.exit, "output": self.output, "log": self.log}


def decode(request: Mapping[str, Any]) -> tuple[dict[str, str], bytes, str, float]:
    """The wire request's environment, stdin, netns error and deadline; malformed is code 105."""
    env, stdin, error, deadline = (request.get(k) for k in ("env", "stdin", "netnsError", "deadline"))
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise _protocol("env must be an object of strings")
    if not isinstance(stdin, str):
        raise _protocol("stdin must be base64 text")
    try:
        raw = binascii.a2b_base64(stdin.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _protocol(f"stdin is not base64: {exc}") from None
    if not isinstance(error, str | None):
        raise _protocol("netnsError must be a string")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int | float)):
        raise _protocol("deadline must be a number")
    picked = {k: env[k] for k in spec.FORWARDED_ENV if k in env}
    return picked, raw, error or "", float(deadline or 0.0)


def _protocol(details: str) -> spec.CniError:
    return spec.CniError(spec.ERR_AGENT_PROTOCOL, "bad request from the podnet plugin", details)


def answer(
    handler: Handler,
    env: Mapping[str, str],
    stdin: bytes,
    netns_fd: int | None = None,
    netns_error: str = "",
    deadline: float = 0.0,
) -> Answer:
    """Validate (env first: code 4, then stdin: 6/7/1), run, and shape the output for the
    config's ``cniVersion``; errors are answered in that version where it was readable."""
    version = spec.CURRENT_VERSION
    command = env.get("CNI_COMMAND", "")
    try:
        invocation = spec.parse_invocation(env, stdin)
        if invocation.command == "VERSION":
            return Answer(0, spec.version_info())
        version = invocation.cni_version
        try:
            response = handler.cni(Call(invocation, netns_fd, netns_error, deadline))
        except Exception as exc:  # a handler bug is an answer, never a dead connection
            raise spec.CniError(spec.ERR_AGENT_INTERNAL, "podnet agent internal error", repr(exc)) from exc
        if not response.get("ok"):
            raise spec.CniError(
                int(response.get("code") or spec.ERR_AGENT_INTERNAL),
                str(response.get("msg") or "podnet agent failed"),
                str(response.get("details") or ""),
            )
        if invocation.command == "ADD":
            return Answer(0, spec.convert_result(response.get("result") or {}, version))
        return Answer(0, None)
    except spec.CniError as err:
        if command == "STATUS" and err.code == spec.ERR_TRY_AGAIN_LATER:
            err = spec.CniError(spec.ERR_PLUGIN_NOT_AVAILABLE, "plugin not available", err.details)
        shown = version if version in spec.SUPPORTED_VERSIONS else spec.CURRENT_VERSION
        return Answer(1, err.to_json(shown), f"podnet: {command or '?'} failed: {err}")
