"""Registries of podnet's pluggable parts, keyed by the config value that selects them.

Three registries: routing modes (``routingMode``), tunnel protocols (``tunnelProtocol``) and IPAM
modes (``ipam.mode``). Each entry has two halves, registered by name:

- its *spec* (``describe``): plain facts, cheap to import (``podnet.specs``): what config
  validates against, what status, capture and diagnose print or decode, what the pod guard
  closes. Config, status and the verification commands read only specs.
- its *implementation* (``register``): the code that plans and touches the kernel or the
  datastore (``podnet.datapath.modes``, ``podnet.datapath.tunnels``, ``podnet.ipam.modes``),
  loaded only when something asks for it (``get``).

Each registry names the module whose import registers its built-in specs and the one that
registers its built-in implementations, and loads them on first use (flannel's backend manager
does the same). Out-of-tree parts are modules named in ``PODNET_PLUGINS`` (comma-separated),
imported with the specs: a plugin registers both halves. That lazy load is the one place where
a low layer reaches an implementation (docs/architecture.md, "Layers").
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownChoice(KeyError):
    """A name no implementation is registered under; the message lists the valid ones."""

    def __str__(self) -> str:
        return str(self.args[0])


PLUGINS_ENV = "PODNET_PLUGINS"
_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules ``PODNET_PLUGINS`` names (once per process); a plugin that cannot be
    imported is an error that names it, never a silent default."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"{PLUGINS_ENV}: cannot import plugin {module!r}: {exc}") from exc


class Registry(Generic[T]):
    """name -> spec and name -> implementation. ``specs`` is the module whose import describes
    the built-in ones, ``builtin`` the one whose import registers their implementations."""

    def __init__(self, what: str, setting: str, builtin: str, specs: str) -> None:
        self.what = what
        self.setting = setting
        self._builtin = builtin
        self._specs_module = specs
        self._items: dict[str, T] = {}
        self._specs: dict[str, Any] = {}
        self._loaded = False
        self._specs_loaded = False
        self._default: str | None = None

    def describe(self, name: str, spec: Any, default: bool = False) -> Any:
        """Register ``name``'s spec; ``default`` marks the value a config that names none gets."""
        if name in self._specs and self._specs[name] is not spec:
            raise ValueError(f"{self.what} {name!r} is described twice")
        self._specs[name] = spec
        if default:
            self._default = name
        return spec

    def _load_specs(self) -> None:
        if not self._specs_loaded:
            self._specs_loaded = True
            importlib.import_module(self._specs_module)
            load_plugins()

    def spec(self, name: str) -> Any:
        """The spec registered as ``name``; ``UnknownChoice`` names the valid ones."""
        self._load_specs()
        if name not in self._specs:
            self._unknown(name)
        return self._specs[name]

    def specs(self) -> tuple[Any, ...]:
        self._load_specs()
        return tuple(self._specs[n] for n in sorted(self._specs))

    def default(self) -> str:
        """The name a config gets when it names none."""
        self._load_specs()
        if self._default is None:
            raise LookupError(f"no {self.what} is marked as the default")
        return self._default

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = item
        return item

    def _load(self) -> None:
        self._load_specs()
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self._builtin)

    def names(self) -> tuple[str, ...]:
        """Every described name (a config may choose it); no implementation is loaded."""
        self._load_specs()
        return tuple(sorted(self._specs))

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; ``UnknownChoice`` names the valid ones."""
        self._load()
        if name not in self._items:
            if name in self._specs:
                raise LookupError(f"{self.what} {name!r} is described but nothing implements it")
            self._unknown(name)
        return self._items[name]

    def _unknown(self, name: str) -> None:
        close = difflib.get_close_matches(name, self._specs, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownChoice(
            f"unknown {self.what} {name!r}{hint}: {self.setting} must be one of {', '.join(self.names())}"
        )

    def __iter__(self) -> Iterator[T]:
        self._load()
        return iter([self._items[n] for n in sorted(self._items)])

    def __contains__(self, name: object) -> bool:
        self._load_specs()
        return name in self._specs


# The implementations are typed by their packages (RoutingMode, TunnelProtocol, an IPAM allocator
# factory), which give typed accessors; the specs are ``podnet.specs``' dataclasses.
ROUTING_MODES: Registry[Any] = Registry(
    "routing mode", "routingMode", "podnet.datapath.modes", "podnet.specs.routing"
)
"""Specs: ``specs.routing.RoutingSpec``."""
TUNNEL_PROTOCOLS: Registry[Any] = Registry(
    "tunnel protocol", "tunnelProtocol", "podnet.datapath.tunnels", "podnet.specs.tunnels"
)
"""Specs: ``specs.tunnel.TunnelSpec``."""
IPAM_MODES: Registry[Any] = Registry("IPAM mode", "ipam.mode", "podnet.ipam.modes", "podnet.specs.ipam")
"""Specs: ``specs.ipam.IpamSpec``; implementations are allocator factories."""
