"""``--set key=value`` on top of a topology's ``cluster`` settings (dotted keys, YAML values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import yaml

from podnet.lab.topology import Topology, TopologyError


def parse_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``["ipam.mode=cluster-pool", "autoDirectNodeRoutes=true"]`` -> nested mapping."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TopologyError(f"--set {pair!r}: expected KEY=VALUE, e.g. routingMode=native")
        value = yaml.safe_load(raw) if raw else ""
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                prefix = ".".join(parts[: i + 1])
                raise TopologyError(
                    f"--set {pair!r}: {prefix} was already set to a value ({node!r}), so it cannot "
                    f"also have a key {parts[i + 1]!r}; drop one of the two --set {prefix}..."
                )
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise TopologyError(
                f"--set {pair!r}: {key} already has keys from another --set ({key}.<...>); "
                "drop one of the two"
            )
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(topo: Topology, pairs: Sequence[str]) -> Topology:
    return replace(topo, cluster=merge(dict(topo.cluster), parse_pairs(pairs)))
