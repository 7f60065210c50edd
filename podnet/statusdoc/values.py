"""How the typed sections read the values of an older or partial document: a missing or ``null``
value becomes the field's default, never an exception (``podnet status`` must still print what an
older agent sent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: Any) -> str | None:
    """A string, or None for a missing, ``null`` or empty value."""
    return str(value) if value else None


def texts(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


def counts(value: Any) -> dict[str, int]:
    """``{name: count}``; a value that is not a mapping reads as empty."""
    return {str(k): int(v or 0) for k, v in value.items()} if isinstance(value, Mapping) else {}


def integer(value: Any, default: int | None = 0) -> int | None:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def number(value: Any, default: float | None = 0.0) -> float | None:
    try:
        return float(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def section(value: Any) -> Mapping[str, Any]:
    """A sub-document; anything else (missing, ``null``, a list) reads as an empty one."""
    return value if isinstance(value, Mapping) else {}


def sections(value: Any) -> list[Mapping[str, Any]]:
    """A list of sub-documents (entries that are not objects are skipped)."""
    return [v for v in value or () if isinstance(v, Mapping)]


def optional(value: Any) -> str | None:
    """A string as sent (``""`` stays ``""``), None for a missing or ``null`` value."""
    return None if value is None else str(value)
