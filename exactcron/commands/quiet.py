"""The quiet run: telling, cheaply, that a full `update` would change nothing.

Most runs find nothing new. The last full run records, beside the
checkpoints (saved last, so a run killed earlier leaves an older record that
no longer fits), what its outcome depended on: the configuration, the
identity and size of every log file before it read them, the lease store's
version and the maps as it left them, and the earliest lease expiry. While
all of that still holds, a full run would read nothing, grant nothing,
expire nothing and write nothing: it is skipped. Anything missing, unknown
or different means a full run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from exactcron.config import Config, MapConfig, SourceConfig
from exactcron.model import Lease
from exactcron.sources.open import open_source
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import file_signature


class Signatures:
    """What the quiet run compares, each taken once per run: the full run that
    follows a quiet check that failed records the same values (a source's,
    taken before it is read) instead of taking them again."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._config_key: list[Any] | None = None
        self._sources: dict[str, Any] = {}

    def config_key(self) -> list[Any]:
        if self._config_key is None:
            self._config_key = config_key(self._config)
        return self._config_key

    def source(self, source: SourceConfig) -> Any:
        """A source's signature (Source.signature), taken the first time it is asked for."""
        key = str(source.path)
        if key not in self._sources:
            self._sources[key] = open_source(source).signature()
        return self._sources[key]


def quiet_leases(
    config: Config,
    settled: dict[str, Any] | None,
    saved: dict[str, dict[str, Any]],
    store: LeaseStore,
    now: datetime,
    signatures: Signatures,
) -> int | None:
    """The number of leases in force when a full run has nothing to do, else None.

    The store's version is asked last: it may be a query to a database.
    """
    if settled is None:
        return None
    expires = settled.get("expires", "")
    active = settled.get("active")
    if not (expires is None or isinstance(expires, int)) or not isinstance(active, int):
        return None
    if expires is not None and now.timestamp() >= expires:
        return None
    if settled.get("held"):
        return None  # leases held while connected are extended at every run
    if settled.get("config") != signatures.config_key():
        return None
    maps = maps_signature(config.maps)
    if maps is None or settled.get("maps") != maps:
        return None
    logs = settled.get("logs")
    if not isinstance(logs, dict):
        return None
    for source in config.sources:
        key = str(source.path)
        if key not in saved:
            return None
        # A log file compares its files' signature with the recorded one; a journal asks journalctl.
        opened = open_source(source, saved[key], now - config.timeout)
        if not opened.quiet(logs.get(key), signatures.source(source)):
            return None
    leases = settled.get("leases")
    if leases is None or store.version() != leases:
        return None
    return active


def settled_record(
    config: Config,
    signatures: Signatures,
    active: Sequence[Lease],
    version: Any,
    logs: dict[str, Any],
    unread: dict[str, int | None],
) -> dict[str, Any]:
    """What a full run that left `active` in force (at the store's `version`) depended on,
    and the bytes it left unread (for the metrics of the quiet runs that follow)."""
    earliest = min((lease.expires for lease in active), default=None)
    record = {
        "config": signatures.config_key(),
        # Whole seconds, rounded down: a quiet run ends before any lease does.
        "expires": None if earliest is None else math.floor(earliest.timestamp()),
        "active": len(active),
        "leases": version,
        "maps": maps_signature(config.maps),
        "logs": logs,
    }
    if unread:
        record["unread"] = unread
    return record


def config_key(config: Config) -> list[Any]:
    """What of the configuration decides the leases and the maps, as JSON values."""
    return [
        config.timeout.total_seconds(),
        sorted(str(network) for network in config.ignore),
        [[spec.mta, str(spec.path), spec.type, str(spec.include or "")] for spec in config.maps],
        [
            [
                str(source.path),
                str(source.olddir or ""),
                list(source.rotated),
                [[rule.name, [needle.hex() for needle in rule.needles]] for rule in source.rules],
                sorted(source.hosts) if source.hosts is not None else "*",
                source.written_by,
                list(source.syslog_senders),
            ]
            for source in config.sources
        ],
        [config.store.url, config.store.schema] if config.store else None,
    ]


def maps_signature(maps: Iterable[MapConfig]) -> list[Any] | None:
    """Each map's text and the databases built beside it (NAME.db, .lmdb, .cdb), and its include."""
    signature: list[Any] = []
    for spec in maps:
        files: list[Any] = [[spec.path.name, file_signature(spec.path)]]
        try:
            entries = sorted(os.scandir(spec.path.parent), key=lambda entry: entry.name)
        except OSError:
            return None
        files += [
            [entry.name, file_signature(Path(entry.path))]
            for entry in entries
            if entry.name.startswith(spec.path.name + ".")
        ]
        include = file_signature(spec.include) if spec.include else None
        signature.append([str(spec.path), files, include])
    return signature
