"""A real host as a cluster view: this machine's own namespace, its one agent, no underlay routers.

The agent is reached at its API socket (the agent's own default, ``agentSocket``, unless given);
the kernel is read through a netlink socket in this process's namespace and never changed.
Commands that walk paths through several hosts need a lab (a ``PathView``) and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from podnet.agent.api import request
from podnet.config import AgentConfig
from podnet.verify.view import BgpRouter, NoAgentError

DEFAULT_AGENT_SOCKET: Path = AgentConfig.agent_socket  # the dataclass default: /var/run/podnet/agent.sock
NODE = "local"  # the one node's name until its agent says otherwise


class HostView:
    """This machine, with its agent at ``socket``; use as a context manager."""

    def __init__(self, socket: Path = DEFAULT_AGENT_SOCKET) -> None:
        self.socket = socket
        self._ipr: IPRoute | None = None

    def __enter__(self) -> HostView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @property
    def lab(self) -> None:
        return None

    @property
    def nodes(self) -> list[str]:
        return [NODE]

    def ns(self, host: str) -> None:
        return None

    def ipr(self, host: str) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def agent_socket(self, node: str) -> Path:
        return self.socket

    def agent_status(self, node: str) -> dict[str, Any]:
        """The agent's status document; without an answer there is nothing to show (NoAgentError)."""
        try:
            return request(self.socket, {"op": "status"})
        except OSError as e:
            raise NoAgentError(
                f"agent socket {self.socket}: {e.strerror or e}; is the agent running (podnet agent)?"
            ) from e

    def routers_by_address(self) -> dict[str, str]:
        return {}

    def supervised(self) -> list[dict[str, Any]]:
        return []  # a real host's control plane is its cluster's (systemd, static pods)

    def bgp_routers(self) -> list[BgpRouter]:
        return []
