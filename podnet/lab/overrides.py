"""``--set key=value`` on top of a topology's ``cluster`` settings (dotted keys, YAML values)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from podnet.config import ConfigError, merge, parse_pairs
from podnet.lab.topology import Topology, TopologyError


def apply_overrides(topo: Topology, pairs: Sequence[str]) -> Topology:
    try:
        over = parse_pairs(pairs)
    except ConfigError as exc:
        raise TopologyError(str(exc)) from None
    return replace(topo, cluster=merge(topo.cluster, over))
