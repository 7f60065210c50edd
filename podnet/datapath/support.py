"""What this kernel can carry: refuse a config whose routing mode needs a tunnel the kernel lacks.

Asked at agent start and before a live reload is adopted, so that a refusal comes before any
device is touched. The answer comes from the tunnel protocol (``unsupported_reason``).
"""

from __future__ import annotations

from collections.abc import Callable

from podnet.config import AgentConfig, ConfigError
from podnet.datapath.modes import mode_for
from podnet.datapath.tunnels import unsupported_reason


def check_kernel_support(config: AgentConfig, has_link_kind: Callable[[str], bool] | None = None) -> None:
    """``ConfigError`` on ``tunnelProtocol`` when the mode tunnels with a protocol this kernel
    cannot carry. ``has_link_kind(kind)`` answers whether the kernel can create links of that
    kind; by default ``podnet.datapath.kernel.link.link_kind_supported``."""
    protocol = mode_for(config).tunnel(config)
    if protocol is None:
        return
    reason = unsupported_reason(protocol, has_link_kind)
    if reason is not None:
        raise ConfigError("tunnelProtocol", reason)
