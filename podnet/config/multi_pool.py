"""The settings of ``ipam.mode: multi-pool`` (Cilium's names): the addresses a node keeps ready
per pool (``ipam.multiPoolPreAllocation``) and the pools the operator creates when they are missing
(``ipam.operator.autoCreatePodIPPools``, Cilium's ``autoCreateCiliumPodIPPools``). Pure."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from podnet.config.errors import ConfigError
from podnet.config.modesettings import ModeSettings, Setting
from podnet.config.values import as_int, as_list, yaml_text
from podnet.model import IPNetwork

if TYPE_CHECKING:
    from podnet.config.agent import AgentConfig

POOL_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a PodnetIPPool's (DNS-1123) name


def pre_allocation(key: str, value: Any) -> tuple[tuple[str, int], ...]:
    """``{default: 8, blue: 4}`` or Cilium's flag form ``default=8,blue=4``."""
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        items = []
        for part in as_list(value):
            name, sep, count = part.partition("=")
            if not sep or not name.strip():
                raise ConfigError(key, f"{part!r}: expected POOL=COUNT, e.g. default=8")
            items.append((name.strip(), count))
    return tuple(sorted((name, as_int(key, count, 0, 65536, zero_ok=True)) for name, count in items))


def pool_specs(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """``{default: {ipv4: {cidrs: [10.10.0.0/16], maskSize: 24}}}``: pool name -> PodnetIPPool spec
    (the operator checks the CIDRs when it creates the pools)."""
    if value in (None, ""):
        return ()
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ConfigError(key, "expected {POOL: {ipv4: {cidrs: [CIDR, ...], maskSize: N}}}")
    for name, spec in value.items():
        if not POOL_NAME.fullmatch(str(name)):
            raise ConfigError(key, f"pool name {name!r}: use lower-case letters, digits, '-' and '.'")
        for family in spec:
            if family not in ("ipv4", "ipv6") or not isinstance(spec[family], Mapping):
                raise ConfigError(key, f"pool {name}: {family!r} is not ipv4/ipv6 with {{cidrs, maskSize}}")
    return tuple(sorted((str(name), json.dumps(spec, sort_keys=True)) for name, spec in value.items()))


def default_pools(cluster_pools: list[str], mask: int) -> dict[str, Any]:
    """``autoCreatePodIPPools`` when the cluster sets none: a ``default`` pool over the cluster pool."""
    return {"default": {"ipv4": {"cidrs": list(cluster_pools), "maskSize": mask}}}


def auto_create_arg(configured: tuple[tuple[str, str], ...], cluster_pools: list[str], mask: int) -> str:
    """The operator's ``--auto-create-pod-ip-pools``: the configured pools, else the default one."""
    pools = {name: json.loads(spec) for name, spec in configured} or default_pools(cluster_pools, mask)
    return json.dumps(pools, sort_keys=True)


def pool_prefixes(cfg: AgentConfig, family: str, mask: int) -> list[tuple[IPNetwork, int, int]]:
    """Each configured pool's CIDRs of ``family``, announced at the pool's mask size."""
    found: list[tuple[IPNetwork, int, int]] = []
    for _, text in cfg.setting("auto_create_pod_ip_pools"):
        spec = json.loads(text).get(family) or {}
        size = int(spec.get("maskSize") or mask)
        found += [(ipaddress.ip_network(c), size, size) for c in spec.get("cidrs") or []]
    return found


SETTINGS = ModeSettings(
    {
        "multi_pool_pre_allocation": Setting(
            ("ipam.multiPoolPreAllocation", "ipam-multi-pool-pre-allocation"),
            pre_allocation,
            default=(("default", 8),),  # pool -> preAlloc
            mapping=True,
        ),
        # the operator's pools to create when missing: (name, PodnetIPPool spec as JSON)
        "auto_create_pod_ip_pools": Setting(
            (
                "ipam.operator.autoCreatePodIPPools",
                "ipam.operator.autoCreateCiliumPodIPPools",
                "auto-create-pod-ip-pools",
            ),
            lambda k, v: pool_specs(k, yaml_text(v)),
            default=(),
            mapping=True,
        ),
    },
    prefixes=pool_prefixes,
)
