"""An IPAM mode's own section of the status document (a cloud mode's instance, limits and interfaces, say),
under the key that names the mode (``ipam.mode``). Its fields are the mode's own and stay opaque
here; the mode also writes them as ``rows`` (label, text) that ``podnet status`` prints as they
are, so no reader of the document needs to know the mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROWS = "rows"


@dataclass(frozen=True)
class ModeSection:
    name: str  # the key: the IPAM mode's name
    fields: Mapping[str, Any] = field(default_factory=dict)  # the mode's own, for -o json readers
    rows: tuple[tuple[str, str], ...] = ()  # what status prints, "  <label>" rows nested under the first

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, ROWS: [[label, text] for label, text in self.rows]}

    @classmethod
    def from_json(cls, name: str, doc: Mapping[str, Any] | None) -> ModeSection | None:
        """None when the document has no such section; an agent from before ``rows`` prints none."""
        if not isinstance(doc, Mapping):
            return None
        rows = tuple(
            (str(row[0]), str(row[1]))
            for row in doc.get(ROWS) or ()
            if isinstance(row, list | tuple) and len(row) == 2
        )
        return cls(name, {k: v for k, v in doc.items() if k != ROWS}, rows)
