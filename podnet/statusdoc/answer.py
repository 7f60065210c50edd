"""An agent API's error answer (``{"ok": false, "code", "msg", "details"}``), whatever the op:
what a reader of any other answer checks first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.statusdoc.values import integer


@dataclass(frozen=True)
class ApiError:
    code: int
    msg: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "code": self.code, "msg": self.msg, "details": self.details}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ApiError | None:
        """The error an answer carries; None for an answer that is not one."""
        if doc.get("ok") is not False:
            return None
        return cls(integer(doc.get("code")) or 0, str(doc.get("msg") or ""), str(doc.get("details") or ""))
