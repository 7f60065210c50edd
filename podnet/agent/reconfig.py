"""Live reconfiguration (SIGHUP, a changed config file, ``podnet config set``): which settings a
running agent may adopt and whether the kernel can do what the new ones ask (pure, but for the
kernel check), and the config file's change detection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from podnet.config import AgentConfig, ConfigError
from podnet.config.agent import ipam_setting_names
from podnet.datapath.modes import mode_for
from podnet.datapath.support import check_kernel_support

# settings a running agent cannot adopt: they change its identity, its store or its allocations
# (so do the IPAM modes' own settings, AgentConfig.ipam_settings)
RESTART_ONLY = ("node_name", "etcd_endpoints", "ipam_mode", "cluster_pool_ipv4_cidrs",
                "cluster_pool_ipv4_mask_size", "agent_socket", "state_dir", "devices",
                "bgp_enabled", "bgp_local_asn", "bgp_peers", "bgp_advertise")  # fmt: skip


def refusal(old: AgentConfig, new: AgentConfig) -> tuple[str, list[str]] | None:
    """Why ``new`` cannot be adopted live, and the settings to blame; None when it can."""
    frozen = [f for f in RESTART_ONLY if getattr(new, f) != getattr(old, f)] + _settings_changed(old, new)
    if frozen:
        return f"{', '.join(frozen)} can only change with an agent restart", frozen
    try:
        check_kernel_support(new)
    except ConfigError as exc:
        return str(exc), [exc.key]
    except LookupError as exc:
        return str(exc), ["routing_mode"]
    return None


def changed(old: AgentConfig, new: AgentConfig) -> list[str]:
    fields = [f.name for f in dataclasses.fields(new) if f.name != "ipam_settings"]
    return [f for f in fields if getattr(new, f) != getattr(old, f)] + _settings_changed(old, new)


def _settings_changed(old: AgentConfig, new: AgentConfig) -> list[str]:
    return [name for name in ipam_setting_names() if new.setting(name) != old.setting(name)]


def paths_switch(old: AgentConfig, new: AgentConfig) -> bool:
    """Whether peers' paths change kind (another routing mode or tunnel): they switch over the
    next moments, and the agent bridges the gap."""
    return mode_for(new) is not mode_for(old) or mode_for(new).tunnel(new) != mode_for(old).tunnel(old)


class WatchedFile:
    """A config file's modification time: ``changed()`` once per change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path is not None else None
        except OSError:
            return None

    def changed(self) -> bool:
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return False
        self._mtime = mtime
        return True
