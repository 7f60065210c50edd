"""The agent's ``masquerade`` section: what is applied (the nft table in the node's namespace), not
only what is configured; the IPv6 half under ``ipv6``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.statusdoc.values import section, text, texts

NFTABLES, DISABLED = "nftables", "disabled"


@dataclass(frozen=True)
class Masquerade6Status:
    enabled: bool = False  # enableIPv6Masquerade
    mode: str = DISABLED  # nftables | disabled
    table: str | None = None
    exempt: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "enableIPv6Masquerade": self.enabled,
            "mode": self.mode,
            "table": self.table,
            "exempt": list(self.exempt),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Masquerade6Status:
        doc = section(doc)
        return cls(
            enabled=bool(doc.get("enableIPv6Masquerade")),
            mode=str(doc.get("mode") or DISABLED),
            table=text(doc.get("table")),
            exempt=texts(doc.get("exempt")),
        )


@dataclass(frozen=True)
class MasqueradeStatus:
    enabled: bool | None = None  # enableIPv4Masquerade; None: no masquerade component reported
    mode: str = DISABLED  # nftables | disabled
    table: str | None = None
    device: str | None = None  # the egress device of the SNAT
    exempt: tuple[str, ...] = ()  # destinations never masqueraded (besides the nodes)
    ipv6: Masquerade6Status = field(default_factory=Masquerade6Status)

    def to_json(self) -> dict[str, Any]:
        if self.enabled is None:
            return {"mode": self.mode}
        return {
            "enableIPv4Masquerade": self.enabled,
            "mode": self.mode,
            "table": self.table,
            "device": self.device,
            "exempt": list(self.exempt),
            "ipv6": self.ipv6.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> MasqueradeStatus:
        doc = section(doc)
        if "enableIPv4Masquerade" not in doc:
            return cls(mode=str(doc.get("mode") or DISABLED))
        return cls(
            enabled=bool(doc.get("enableIPv4Masquerade")),
            mode=str(doc.get("mode") or DISABLED),
            table=text(doc.get("table")),
            device=text(doc.get("device")),
            exempt=texts(doc.get("exempt")),
            ipv6=Masquerade6Status.from_json(doc.get("ipv6")),
        )
