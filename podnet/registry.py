"""Registries of podnet's pluggable parts, keyed by the config value that selects them.

Three registries: routing modes (``routingMode``), tunnel protocols (``tunnelProtocol``) and IPAM
modes (``ipam.mode``). An implementation registers itself when its module is imported (flannel's
backend manager does the same); each registry names the one package whose import registers the
built-in implementations, and loads it on first use. That lazy load is the one place where a low
layer reaches an implementation: config validates a value against the registered names without
importing the datapath or IPAM code itself (see docs/architecture.md, "Layers").
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownChoice(KeyError):
    """A name no implementation is registered under; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """name -> implementation; ``builtin`` is the module whose import registers the built-in ones."""

    def __init__(self, what: str, setting: str, builtin: str) -> None:
        self.what = what
        self.setting = setting
        self._builtin = builtin
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._builtin)

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(sorted(self._items))

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; ``UnknownChoice`` names the valid ones."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownChoice(
                f"unknown {self.what} {name!r}{hint}: {self.setting} must be one of {', '.join(self.names())}"
            ) from None

    def __iter__(self) -> Iterator[T]:
        self._load()
        return iter([self._items[n] for n in sorted(self._items)])

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items


# The values stored are the implementations' own types (RoutingMode, TunnelProtocol, an IPAM
# allocator factory); their packages give typed accessors. Config reads only names and the few
# plain attributes each docstring lists.
ROUTING_MODES: Registry[Any] = Registry("routing mode", "routingMode", "podnet.datapath.modes")
"""Entries have ``name`` and ``routing_mode`` (the routingMode value they serve)."""
TUNNEL_PROTOCOLS: Registry[Any] = Registry("tunnel protocol", "tunnelProtocol", "podnet.datapath.tunnels")
"""Entries have ``name`` and ``default_port``."""
IPAM_MODES: Registry[Any] = Registry("IPAM mode", "ipam.mode", "podnet.ipam.modes")
"""Entries are allocator factories."""
