"""The MTA's relay maps: render the leases, build, and rename into place.

The MTA must never see a half-written map nor find it missing. Every file of
a map (the text and the `.db`, `.lmdb` or `.cdb` that postmap or makemap
makes from it) is built under a temporary name in the map's own directory
and renamed over the live one; the database first, the text last, so that a
crash between the two leaves a text that differs from the leases and the
next run builds again. When a build fails, the live map is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exactcron.config import MapConfig
from exactcron.errors import MapBuildError, StateWriteError
from exactcron.store import fsync_directory, write_atomically

MAP_MODE = 0o644  # the MTA reads it; only the owner writes
_DATABASE_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "texthash": None}
_TOOL_TIMEOUT_SECONDS = 120


def render(mta: str, addresses: Sequence[str], include: bytes = b"") -> bytes:
    """The map's text for these addresses, which must be normalized and sorted."""
    if mta == "postfix":
        lines = [f"{address} OK\n" for address in addresses]
    elif mta == "exim":
        lines = [f"{address}\n" for address in addresses]
    elif mta == "sendmail":
        lines = [
            f"Connect:IPv6:{address} RELAY\n" if ":" in address else f"Connect:{address} RELAY\n"
            for address in addresses
        ]
    else:
        raise ValueError(f"unknown MTA {mta!r}")
    if include and not include.endswith(b"\n"):
        include += b"\n"
    return include + "".join(lines).encode()


@dataclass
class MapWriter:
    """Installs maps; asks postconf for the default type at most once."""

    _default_postfix_type: str | None = None

    def database_type(self, spec: MapConfig) -> str | None:
        """The postmap type of a postfix map; None for maps without a database."""
        if spec.mta == "sendmail":
            return "hash"
        if spec.mta != "postfix":
            return None
        if spec.type is not None:
            return spec.type
        if self._default_postfix_type is None:
            output = _run(["postconf", "-h", "default_database_type"], "postconf")
            self._default_postfix_type = output.strip() or "hash"
        return self._default_postfix_type

    def install(self, spec: MapConfig, addresses: Sequence[str]) -> bool:
        """Write the map if its content changed or a file of it is missing.

        Returns True when the map was rewritten.
        """
        include = _read_include(spec)
        content = render(spec.mta, addresses, include)
        database_type = self.database_type(spec)
        suffix = _DATABASE_SUFFIX.get(database_type) if database_type else None
        if _is_current(spec.path, content, suffix):
            return False
        if suffix is None:
            write_atomically(spec.path, content, MAP_MODE)
            return True
        assert database_type is not None
        _build_and_install(spec, content, database_type, suffix)
        return True


def database_path(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _is_current(path: Path, content: bytes, suffix: str | None) -> bool:
    try:
        if path.read_bytes() != content:
            return False
    except OSError:
        return False
    return suffix is None or database_path(path, suffix).exists()


def _read_include(spec: MapConfig) -> bytes:
    if spec.include is None:
        return b""
    try:
        return spec.include.read_bytes()
    except OSError as error:
        raise MapBuildError(f"cannot read include file {spec.include}: {error.strerror}") from None


def _build_and_install(spec: MapConfig, content: bytes, database_type: str, suffix: str) -> None:
    directory = spec.path.parent
    try:
        handle, name = tempfile.mkstemp(prefix=f".{spec.path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise StateWriteError(f"cannot write map in {directory}: {error.strerror}") from None
    text = Path(name)
    database = database_path(text, suffix)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            os.fchmod(stream.fileno(), MAP_MODE)
            stream.flush()
            os.fsync(stream.fileno())
        if spec.mta == "sendmail":
            with open(text, "rb") as stdin:
                _run(["makemap", database_type, str(text)], "makemap", stdin=stdin)
        else:
            _run(["postmap", f"{database_type}:{text}"], "postmap")
        os.chmod(database, MAP_MODE)
        with open(database, "rb") as built:
            os.fsync(built.fileno())
        os.replace(database, database_path(spec.path, suffix))
        os.replace(text, spec.path)
        fsync_directory(directory)
    except OSError as error:
        raise StateWriteError(f"cannot install map {spec.path}: {error.strerror}") from None
    finally:
        for leftover in (text, database):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _run(command: list[str], tool: str, stdin: object = None) -> str:
    try:
        finished = subprocess.run(
            command,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,  # type: ignore[arg-type]
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise MapBuildError(f"{tool} not found on PATH ({os.environ.get('PATH', '')})") from None
    except subprocess.TimeoutExpired:
        raise MapBuildError(f"{tool} did not finish within {_TOOL_TIMEOUT_SECONDS}s") from None
    if finished.returncode != 0:
        message = (
            " ".join((finished.stderr or finished.stdout).split()) or f"exit status {finished.returncode}"
        )
        raise MapBuildError(f"{tool} failed: {message}")
    return finished.stdout
