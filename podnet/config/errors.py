"""The one error type of podnet's settings: it names the key, the bad value and what to do instead."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value podnet refuses; the message names the key and what to do instead."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"invalid configuration {key}: {message}")
        self.key = key
