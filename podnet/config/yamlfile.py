"""YAML as podnet reads it: safe, and a key given twice in one mapping is an error (naming the key
and both lines), never "the last one wins" as PyYAML has it."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names a key twice."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if isinstance(key, list | dict):
                continue  # unhashable keys: PyYAML itself refuses them below
            if key in seen:
                raise DuplicateKeyError(
                    f"duplicate key {key!r} at line {line} (first at line {seen[key]}); remove one of the two"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (``DuplicateKeyError``, a ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_StrictLoader)
