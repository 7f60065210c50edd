"""Settings an IPAM mode brings to the agent's configuration: the ``ModeSettings`` its spec names
(``IpamSpec.settings``), each with Cilium's spellings, its parser and its default, and what the
mode cannot run with. ``config.agent`` accepts them beside its own keys and keeps their values in
``AgentConfig.ipam_settings``; a mode reads its own with ``AgentConfig.setting(name)``.

Design fact: every mode's settings are accepted whichever mode is configured (a file may keep the
settings of a mode it does not use); only the configured mode's conflicts are checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.model import IPNetwork as IPNet

AgentConfig = Any  # config.agent's, which imports this module


@dataclass(frozen=True)
class Setting:
    aliases: tuple[str, ...]  # the spellings accepted (errors name the first); matching ignores case, - _ .
    parse: Callable[[str, Any], Any]  # (key as spelled, raw value) -> value; raises ConfigError
    default: Any = None
    mapping: bool = False  # its value is a mapping, kept whole (not read as dotted keys)


def _no_conflicts(cfg: AgentConfig) -> list[tuple[str, str]]:
    return []


def _no_prefixes(cfg: AgentConfig, family: str, mask: int) -> list[tuple[IPNet, int, int]]:
    return []


@dataclass(frozen=True)
class ModeSettings:
    fields: Mapping[str, Setting] = field(default_factory=dict)  # setting name -> how to read it
    # (AgentConfig field or setting name, why) for what the configured mode cannot run with
    conflicts: Callable[[AgentConfig], list[tuple[str, str]]] = _no_conflicts
    # (prefix, shortest, longest length) a node may announce beyond the cluster pools, per family
    # ("ipv4", "ipv6") and cluster mask size: what routers filtering pod routes must accept too
    prefixes: Callable[[AgentConfig, str, int], list[tuple[IPNet, int, int]]] = _no_prefixes
