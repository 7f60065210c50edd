"""The ``eni:`` settings of ``ipam.mode: eni`` (AWS ENI IPAM), parsed and validated (pure).

Per node (what the agent publishes as its ENI spec, Cilium's CiliumNode ``spec.ipam`` /
``spec.eni``): ``preAllocate``, ``minAllocate``, ``maxAboveWatermark``, ``firstInterfaceIndex``,
``subnetIDsFilter``, ``subnetTagsFilter``, ``securityGroups``, ``securityGroupTags``,
``instanceID``. For the operator: ``awsReleaseExcessIPs``, ``excessIPReleaseDelay``,
``ec2APIEndpoint``, ``awsRegion``. Cilium's spellings are accepted (``pre-allocate``,
``first-interface-index``, ``subnet-ids``, ``subnet-tags``, ``security-group-tags`` ...).
``awsEnablePrefixDelegation: true`` is refused: podnet hands out one address per ENI slot.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.config.errors import ConfigError
from podnet.config.modesettings import ModeSettings, Setting
from podnet.config.values import boolean, yaml_text

DEFAULT_PRE_ALLOCATE = 8  # Cilium's default for ENI mode
DEFAULT_RELEASE_DELAY = 180.0  # seconds (Cilium's --excess-ip-release-delay)
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
SUBNET_ID_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SG_ID_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")


class EniSettingError(ValueError):
    """A bad ENI setting: ``key`` is its path (``eni.preAllocate``), the message says why."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class EniSettings:
    """One node's ENI spec plus the operator's release settings."""

    pre_allocate: int = DEFAULT_PRE_ALLOCATE
    min_allocate: int = 0
    max_above_watermark: int = 0
    first_interface_index: int = 0
    subnet_ids: tuple[str, ...] = ()
    subnet_tags: tuple[tuple[str, str], ...] = ()
    security_groups: tuple[str, ...] = ()
    security_group_tags: tuple[tuple[str, str], ...] = ()
    instance_id: str = ""  # empty: the operator finds the instance by the node's address
    release_excess: bool = False  # awsReleaseExcessIPs (Cilium's default: keep them)
    release_delay: float = DEFAULT_RELEASE_DELAY  # excessIPReleaseDelay, seconds
    ec2_endpoint: str = ""  # the operator's EC2 API URL (empty: the SDK's default for the region)
    region: str = "us-east-1"

    def node_spec(self) -> dict[str, Any]:
        """What the agent publishes for the operator (CiliumNode spec.ipam + spec.eni)."""
        return {
            "preAllocate": self.pre_allocate,
            "minAllocate": self.min_allocate,
            "maxAboveWatermark": self.max_above_watermark,
            "firstInterfaceIndex": self.first_interface_index,
            "subnetIDs": list(self.subnet_ids),
            "subnetTags": dict(self.subnet_tags),
            "securityGroups": list(self.security_groups),
            "securityGroupTags": dict(self.security_group_tags),
            "instanceID": self.instance_id,
        }


_KEYS: dict[str, str] = {
    "preallocate": "pre_allocate",
    "minallocate": "min_allocate",
    "maxabovewatermark": "max_above_watermark",
    "firstinterfaceindex": "first_interface_index",
    "subnetidsfilter": "subnet_ids",
    "subnetids": "subnet_ids",
    "subnettagsfilter": "subnet_tags",
    "subnettags": "subnet_tags",
    "securitygroups": "security_groups",
    "securitygrouptags": "security_group_tags",
    "instanceid": "instance_id",
    "awsreleaseexcessips": "release_excess",
    "excessipreleasedelay": "release_delay",
    "ec2apiendpoint": "ec2_endpoint",
    "awsregion": "region",
    "region": "region",
    "enabled": "",  # Cilium's eni.enabled: ipam.mode eni says it already
    "awsenableprefixdelegation": "prefix_delegation",
}


KNOWN = ("preAllocate", "minAllocate", "maxAboveWatermark", "firstInterfaceIndex", "subnetIDsFilter",
         "subnetTagsFilter", "securityGroups", "securityGroupTags", "instanceID", "awsReleaseExcessIPs",
         "excessIPReleaseDelay", "ec2APIEndpoint", "awsRegion", "awsEnablePrefixDelegation")  # fmt: skip


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


def parse_eni(key: str, value: Any) -> EniSettings:
    """The ``eni`` mapping as ``EniSettings``; unknown keys are refused with a suggestion."""
    if value is None:
        return EniSettings()
    if not isinstance(value, Mapping):
        raise EniSettingError(key, f"must be a mapping like {{preAllocate: 8}}, not {value!r}")
    found: dict[str, Any] = {}
    for name, raw in value.items():
        where = f"{key}.{name}"
        fld = _KEYS.get(_norm(str(name)))
        if fld is None:
            close = difflib.get_close_matches(str(name), KNOWN, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EniSettingError(where, f"unknown ENI setting{hint}")
        if fld == "prefix_delegation":
            if _bool(where, raw):
                raise EniSettingError(
                    where,
                    "prefix delegation (a /28 per ENI slot) is not supported by podnet's ENI mode: each "
                    "slot holds one secondary address; set it to false (the EC2 API of the lab, moto, "
                    "has no prefix delegation either)",
                )
            continue
        if fld:
            found[fld] = _PARSE[fld](where, raw)
    if found.get("pre_allocate") == 0:  # Cilium's rule: 0 means the default
        found["pre_allocate"] = DEFAULT_PRE_ALLOCATE
    return EniSettings(**found)


def _bool(key: str, value: Any) -> bool:
    found = boolean(value)
    if found is None:
        raise EniSettingError(key, f"{value!r} is not a boolean; use true or false")
    return found


def _count(key: str, value: Any, high: int = 1000) -> int:
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 0 <= int(value) <= high:
        raise EniSettingError(key, f"{value!r} is not a count between 0 and {high}")
    return int(value)


def _ids(pattern: re.Pattern[str], example: str) -> Any:
    def parse(key: str, value: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list | tuple) else str(value).replace(",", " ").split()
        found = tuple(str(i).strip() for i in items if str(i).strip())
        for item in found:
            if not pattern.match(item):
                raise EniSettingError(key, f"{item!r} is not an ID like {example}")
        return found

    return parse


def _tags(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """``{k: v}`` or Cilium's flag form ``k=v,k2=v2``."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), str(v)) for k, v in value.items()))
    pairs = []
    for part in str(value).replace(",", " ").split():
        name, sep, tag = part.partition("=")
        if not sep or not name:
            raise EniSettingError(key, f"{part!r} is not KEY=VALUE; write tags as {{key: value}}")
        pairs.append((name, tag))
    return tuple(sorted(pairs))


def _seconds(key: str, value: Any) -> float:
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise EniSettingError(key, f"{value!r} is not a delay like 180 (seconds), 30s or 3m")


def _instance(key: str, value: Any) -> str:
    text = str(value).strip()
    if text and not INSTANCE_ID_RE.match(text):
        raise EniSettingError(key, f"{value!r} is not an instance ID like i-0123456789abcdef0")
    return text


def _endpoint(key: str, value: Any) -> str:
    text = str(value).strip()
    if text and not re.match(r"^https?://[^/\s]+/?$", text):
        raise EniSettingError(key, f"{value!r} is not an endpoint URL like http://127.0.0.1:8773")
    return text


def _region(key: str, value: Any) -> str:
    text = str(value).strip()
    if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d$", text):
        raise EniSettingError(key, f"{value!r} is not an AWS region like us-east-1")
    return text


_PARSE: dict[str, Any] = {
    "pre_allocate": _count,
    "min_allocate": _count,
    "max_above_watermark": _count,
    "first_interface_index": lambda k, v: _count(k, v, 15),
    "subnet_ids": _ids(SUBNET_ID_RE, "subnet-0123456789abcdef0"),
    "subnet_tags": _tags,
    "security_groups": _ids(SG_ID_RE, "sg-0123456789abcdef0"),
    "security_group_tags": _tags,
    "instance_id": _instance,
    "release_excess": _bool,
    "release_delay": _seconds,
    "ec2_endpoint": _endpoint,
    "region": _region,
}


def eni_conflicts(routing_mode: str, auto_direct_node_routes: bool, datastore: str) -> list[tuple[str, str]]:
    """(config field, why) for every setting ``ipam.mode: eni`` cannot run with: ENI mode is
    Cilium's, native routing through the VPC without per-node routes. (Both datastores keep the
    ENI documents: etcd keys, or PodnetNode's spec.eni and status.eni.)"""
    found = []
    if routing_mode != "native":
        found.append((
            "routing_mode",
            f"{routing_mode} cannot be used with ipam.mode=eni (the VPC routes pod addresses); "
            "set routingMode=native",
        ))  # fmt: skip
    if auto_direct_node_routes:
        found.append((
            "auto_direct_node_routes",
            "true cannot be used with ipam.mode=eni: the VPC delivers each pod address to its ENI; "
            "set it to false",
        ))  # fmt: skip
    return found


def _setting(key: str, value: Any) -> EniSettings:
    try:
        return parse_eni(key, yaml_text(value))
    except EniSettingError as exc:
        raise ConfigError(exc.key, str(exc)) from None


SETTINGS = ModeSettings(
    {"eni": Setting(("eni",), _setting, default=EniSettings(), mapping=True)},
    conflicts=lambda cfg: eni_conflicts(cfg.routing_mode, cfg.auto_direct_node_routes, cfg.datastore),
)
