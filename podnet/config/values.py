"""Value spellings and parsers every settings parser shares (pure): each parser takes (key, raw
value) and returns the typed value or raises ``ConfigError`` naming the key and what to write."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from podnet.config.errors import ConfigError

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def boolean(value: Any) -> bool | None:
    """``True``/``False`` from a YAML bool or its usual spellings; None when it is neither (the
    caller raises its own error naming the key)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in TRUE else False if text in FALSE else None


# Value parsers: each takes (key, raw value) and returns the typed value or raises ConfigError
# naming the key and what to write instead.


def as_bool(key: str, value: Any) -> bool:
    found = boolean(value)
    if found is None:
        raise ConfigError(key, f"{value!r} is not a boolean; use true or false")
    return found


def as_int(key: str, value: Any, low: int, high: int, zero_ok: bool = False) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not ((zero_ok and number == 0) or low <= number <= high):
        span = f"0 or {low}..{high}" if zero_ok else f"{low}..{high}"
        raise ConfigError(key, f"{value!r} is not an integer in {span}")
    return number


def as_choice(key: str, value: Any, choices: Iterable[str]) -> str:
    text = str(value).strip()
    valid = sorted(choices)
    if text not in valid:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(valid)}")
    return text


def as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(p for p in str(value).replace(",", " ").split() if p)


def as_cidr(key: str, value: Any) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(
            key, f"{value!r} is not an IPv4 CIDR ({exc}); write it like 10.244.0.0/16 with host bits zero"
        ) from None


def as_cidr6(key: str, value: Any) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(str(value).strip())
    except ValueError as exc:
        raise ConfigError(key, f"{value!r} is not an IPv6 CIDR like fd00:10:244::/48 ({exc})") from None


DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def as_duration(key: str, value: Any) -> float:
    """Seconds from a Go duration as Cilium writes them (``5m0s``, ``90s``, ``1h``, ``0``) or a
    plain number of seconds."""
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(
                key, f"{value!r} is not a duration; write it like 5m0s, 30s or 0 (off)"
            ) from None
        seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if not 0 <= seconds < float("inf"):
        raise ConfigError(key, f"{value!r} is not a duration; it must be 0 (off) or more")
    return seconds


def as_ifname(key: str, value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.:+-]{1,15}$", value.rstrip("*")) or "*" in value.rstrip("*"):
        raise ConfigError(key, f"{value!r} is not an interface name (like eth0, or eth+ / eth* for a prefix)")
    return value.replace("+", "*")


def as_text(key: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError(key, "must not be empty")
    return text


def yaml_text(value: Any) -> Any:
    """A list or mapping given as text (an env variable or ``--set``) is read as YAML/JSON."""
    if isinstance(value, str) and value.strip():
        import yaml

        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value
