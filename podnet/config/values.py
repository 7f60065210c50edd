"""Value spellings every settings parser shares (pure)."""

from __future__ import annotations

from typing import Any

TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def boolean(value: Any) -> bool | None:
    """``True``/``False`` from a YAML bool or its usual spellings; None when it is neither (the
    caller raises its own error naming the key)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in TRUE else False if text in FALSE else None
