"""The agent's endpoint records: one JSON file per pod attachment, ``<dir>/<host ifname>.json``.

Design fact: the files are read once at start and kept in memory; every change is written with
an atomic rename (a kill -9 leaves the old file or the new one) and no fsync: the records protect
against the agent dying, and the page cache outlives the agent. A machine that loses power loses
its pods' namespaces with it, and the endpoint reaper then frees whatever a half-written store
still names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from podnet import owned
from podnet.model import Endpoint

log = logging.getLogger(__name__)


class EndpointRecords:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._index = {r.host_ifname: r for r in self._read()}

    def path(self, container_id: str, ifname: str) -> Path:
        return self.directory / f"{owned.endpoint_host_ifname(container_id, ifname)}.json"

    def _read(self) -> list[Endpoint]:
        """Every attachment recorded on disk (unreadable files are logged and skipped)."""
        found = []
        for path in sorted(self.directory.glob(f"{owned.ENDPOINT_PREFIX}*.json")):
            try:
                found.append(Endpoint.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable endpoint record %s: %s", path, exc)
        return found

    def all(self) -> list[Endpoint]:
        """Every attachment recorded (the files as read at start and written since)."""
        return sorted(self._index.values(), key=lambda r: r.host_ifname)

    def load(self, container_id: str, ifname: str) -> Endpoint | None:
        return self._index.get(owned.endpoint_host_ifname(container_id, ifname))

    def save(self, record: Endpoint) -> None:
        path = self.path(record.container_id, record.ifname)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json()))
        os.replace(tmp, path)
        self._index[record.host_ifname] = record

    def forget(self, container_id: str, ifname: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(container_id, ifname).unlink()
        self._index.pop(owned.endpoint_host_ifname(container_id, ifname), None)
