"""``--set key=value`` pairs (dotted keys, YAML values) as a nested mapping, and deep merges.

Used by ``podnet agent --set``, ``podnet config set`` and ``podnet lab up --set`` alike; a bad
pair is a ``ConfigError`` naming the pair and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from podnet.config.errors import ConfigError


def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["ipam.mode=cluster-pool", "autoDirectNodeRoutes=true"]`` -> nested mapping."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}", "expected KEY=VALUE, e.g. routingMode=native")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair!r}", f"the value is not valid YAML ({exc}); quote it") from None
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"--set {pair!r}",
                    f"{prefix} was already set to a value ({node!r}), so it cannot also have a key "
                    f"{parts[i + 1]!r}; drop one of the two --set {prefix}...",
                )
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(
                f"--set {pair!r}",
                f"{key} already has keys from another --set ({key}.<...>); drop one of the two",
            )
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested mappings merged key by key (neither is changed)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
