"""The MTA's relay maps: render the leases, build, and rename into place.

The MTA must never see a half-written map nor find it missing. Each build
happens in a private temporary directory inside the map's own directory:
the text is written there under the map's name, postmap or makemap builds
its `.db`, `.lmdb` or `.cdb` beside it, and each file is then renamed over
the live one (same file system, so each rename is atomic); the database
first, the text last, so that a crash between the two leaves a text that
differs from the leases and the next run builds again. Whatever else a tool
leaves in that directory goes with it. When a build fails, nothing has been
renamed yet and the live map is untouched.

Over 400 lines: one renderer per MTA map format, the postmap/makemap build
and the fail-closed install with its no-room fallback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from _socket import AF_INET6, inet_pton
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from exactcron import faults
from exactcron.atomic import fsync_directory, open_regular, read_regular, remove_leftovers, write_atomically
from exactcron.config import MAP_VALUE, MapConfig
from exactcron.errors import MapBuildError, MapNoRoomError, StateWriteError
from exactcron.logs import log
from exactcron.stores.local import MAP_RECORD_FILE

# The MTA's daemons (postfix, Debian-exim) must read the map; only its owner writes it.
MAP_MODE = 0o644
DATABASE_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "texthash": None}
# qmail's map: tcprules builds `path.cdb`, which tcpserver -x reads.
TCPRULES = "tcprules"
_TOOL_SUFFIX = {**DATABASE_SUFFIX, TCPRULES: ".cdb"}
_TOOL_TIMEOUT_SECONDS = 120


def render(mta: str, addresses: Sequence[str], include: bytes = b"", value: str | None = None) -> bytes:
    """The map's text for these addresses, which must be normalized and sorted.

    `value` (postfix and sendmail) is what each entry maps to; None: OK for
    postfix, RELAY for sendmail.

    `include` is the site's own entries: for sendmail, its access entries,
    copied in first; for qmail, its tcprules rules, copied in after the
    leases (tcpserver uses the most specific rule, and the site's catch-all
    `:deny` or `:allow` comes last by custom). Sendmail reads one access
    map, and makemap refuses a duplicate key; tcprules keeps the first of
    two: so a lease whose key the site already lists is left out, and the
    site's entry (a REJECT or a deny, say) wins over a login.
    """
    # Joined with the line's end, not built line by line: no string per lease.
    if mta == "postfix":
        text = _lines(addresses, f" {value or 'OK'}\n")
    elif mta == "exim":
        text = _lines(addresses, "\n")
    elif mta == "sendmail":
        taken = sendmail_keys(include)
        keys = [key for key in map(sendmail_key, addresses) if key.lower() not in taken]
        text = _lines(keys, f" {value or 'RELAY'}\n")
    elif mta == "qmail":
        taken = tcprules_keys(include)
        text = _lines([address for address in addresses if address not in taken], ':allow,RELAYCLIENT=""\n')
        if include and not include.endswith(b"\n"):
            include += b"\n"
        return text.encode() + include
    elif mta == "courier":
        text = _lines([courier_key(address) for address in addresses], "\tallow,RELAYCLIENT\n")
    else:
        raise ValueError(f"unknown MTA {mta!r}")
    if include and not include.endswith(b"\n"):
        include += b"\n"
    return include + text.encode()


def _lines(keys: Sequence[str], end: str) -> str:
    return end.join(keys) + end if keys else ""


def sendmail_key(address: str) -> str:
    """The access-map key sendmail looks up for a client at `address`."""
    return f"Connect:IPv6:{address}" if ":" in address else f"Connect:{address}"


def sendmail_keys(text: bytes) -> set[str]:
    """The keys an access-map source defines, lowercased as makemap stores them."""
    keys = set()
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split(None, 1)
        if fields and not fields[0].startswith("#"):
            keys.add(fields[0].lower())
    return keys


def tcprules_keys(text: bytes) -> set[str]:
    """The addresses a tcprules source gives a rule of their own (`ADDRESS:allow...`)."""
    keys = set()
    for line in text.decode("utf-8", "replace").splitlines():
        # The key ends at the last `:allow` or `:deny`: an IPv6 key holds colons.
        match = _TCPRULES_LINE.match(line.strip())
        if match:
            keys.add(match.group(1))
    return keys


_TCPRULES_LINE = re.compile(r"^([0-9A-Fa-f.:]+):(?:allow|deny)\b")


def courier_key(address: str) -> str:
    """The key couriertcpd looks up for a client at `address` (normalized): IPv4
    as it is, IPv6 as `:` and eight groups of four lower-case hex digits."""
    if ":" not in address:
        return address
    groups = inet_pton(AF_INET6, address).hex()
    return "".join(":" + groups[start : start + 4] for start in range(0, 32, 4))


_DATABASE_SUFFIXES = sorted({suffix for suffix in DATABASE_SUFFIX.values() if suffix})


@dataclass
class MapWriter:
    """Installs maps; asks postconf for the default type at most once."""

    _default_postfix_type: str | None = None

    def database_type(self, spec: MapConfig) -> str | None:
        """The postmap or makemap type of a map; None for a map that is its text."""
        if spec.mta == "sendmail":
            return "hash"
        if spec.mta == "qmail":
            return TCPRULES
        if spec.mta != "postfix":
            return None
        if spec.type is not None:
            return spec.type
        if self._default_postfix_type is None:
            output = _run(["postconf", "-h", "default_database_type"], "postconf", for_map=spec)
            default = output.strip() or "hash"
            if default not in DATABASE_SUFFIX:
                raise MapBuildError(
                    f"postconf's default_database_type is {default!r}, which exactcron does not build; "
                    f"set `type` in the [[map]] for {spec.path}"
                )
            self._default_postfix_type = default
        return self._default_postfix_type

    def install(
        self, spec: MapConfig, addresses: Sequence[str], force: bool = False, record: MapRecord | None = None
    ) -> bool:
        """Write the map if its content changed or a file of it differs from what
        was installed last (always, with `force`). Returns True when it was rewritten.

        `record` holds what each map's files held when installed: a database
        replaced without its text (a run killed between the two renames) is
        told apart from one in step with the text, and built again.
        """
        content = render(spec.mta, addresses, _read_include(spec), spec.value)
        digest = hashlib.sha256(content).hexdigest()
        if (
            not force
            and spec.mta == "postfix"
            and spec.type is None
            and self._default_postfix_type is None
            and _is_current(spec.path, content, None)
            and any(
                record is None or record.matches(spec, digest, [spec.path, database])
                for database in _built_databases(spec.path)
            )
        ):
            # Unchanged and built as recorded: postconf (a process, most of a
            # quiet run's time) is asked only when a map is to be built.
            return False
        database_type = self.database_type(spec)
        suffix = _TOOL_SUFFIX[database_type] if database_type else None
        files = [spec.path] + ([database_path(spec.path, suffix)] if suffix else [])
        current = not force and _is_current(spec.path, content, suffix)
        # A qmail map built without its IPv6 leases (below) holds another text
        # than `content`; the record still tells whether its files are those
        # built for `content`.
        current = current or (not force and spec.mta == "qmail" and record is not None)
        if current and (record is None or record.matches(spec, digest, files)):
            return False
        ipv4_only = None
        if spec.mta == "qmail" and any(":" in address for address in addresses):
            # For a tcprules without IPv6 (Debian's ucspi-tcp, not ucspi-tcp-ipv6),
            # which refuses the whole file for one IPv6 line: its tcpserver never
            # sees an IPv6 client anyway, and the IPv4 leases must not be held up.
            ipv4 = [address for address in addresses if ":" not in address]
            ipv4_only = render(spec.mta, ipv4, _read_include(spec), spec.value)
        build = (spec, content, database_type if suffix else None, suffix, ipv4_only)
        try:
            _build_and_install(*build)
        except (StateWriteError, MapBuildError) as error:
            if not _lacks_room(error, spec.path.parent, content):
                raise
            made_room = _install_without_room(build, files, _outlives(spec, content, files, record))
            if record is not None:
                record.remember(spec, digest, files)
            if made_room:
                # In place, and in step with the leases, but the filesystem is full: say so (73).
                raise MapNoRoomError(f"map {spec.path}: {_NO_ROOM_MESSAGE}: {_REWRITTEN}") from None
        if record is not None:
            record.remember(spec, digest, files)
        return True


class MapRecord:
    """What each installed map holds: its configuration, the digest of its text,
    and the identity of its text and database files, as left by the install.

    Kept in the state directory; a map missing from it, or whose files are not
    those recorded, is built again. Also read when the configuration cannot be,
    so that a broken configuration still lets expired leases leave the maps.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / MAP_RECORD_FILE
        self.maps: dict[str, dict[str, Any]] = {}
        try:
            document = json.loads(read_regular(self.path))
        except (OSError, ValueError):
            return
        maps = document.get("maps") if isinstance(document, dict) else None
        if isinstance(maps, dict):
            self.maps = {key: value for key, value in maps.items() if isinstance(value, dict)}

    def matches(self, spec: MapConfig, digest: str, files: list[Path]) -> bool:
        entry = self.maps.get(str(spec.path))
        return (
            entry is not None
            and entry.get("spec") == _spec_json(spec)
            and entry.get("text") == digest
            and entry.get("files") == _identities(files)
        )

    def remember(self, spec: MapConfig, digest: str, files: list[Path]) -> None:
        self.maps[str(spec.path)] = {"spec": _spec_json(spec), "text": digest, "files": _identities(files)}

    def specs(self) -> list[MapConfig]:
        """The maps installed last, as configured then."""
        found = []
        for entry in self.maps.values():
            spec = entry.get("spec")
            if (
                isinstance(spec, dict)
                and isinstance(spec.get("mta"), str)
                and isinstance(spec.get("path"), str)
            ):
                include = spec.get("include")
                kind = spec.get("type")
                value = spec.get("value")
                found.append(
                    MapConfig(
                        spec["mta"],
                        Path(spec["path"]),
                        kind if isinstance(kind, str) else None,
                        Path(include) if isinstance(include, str) else None,
                        value if isinstance(value, str) and re.fullmatch(MAP_VALUE, value) else None,
                    )
                )
        return found

    def save(self, configured: Sequence[MapConfig] | None = None) -> None:
        """Write the record; with `configured`, forget the maps no longer configured."""
        if configured is not None:
            keep = {str(spec.path) for spec in configured}
            self.maps = {key: value for key, value in self.maps.items() if key in keep}
        document = {"schema": 1, "maps": self.maps}
        write_atomically(
            self.path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode(), 0o644, keep_same=True
        )


def _spec_json(spec: MapConfig) -> dict[str, Any]:
    document = {
        "mta": spec.mta,
        "path": str(spec.path),
        "type": spec.type,
        "include": str(spec.include) if spec.include else None,
    }
    if spec.value is not None:
        # Only when set: a record of a map without one stays what it was.
        document["value"] = spec.value
    return document


def _identities(files: list[Path]) -> list[Any]:
    identities: list[Any] = []
    for file in files:
        try:
            status = os.stat(file)
        except OSError:
            identities.append(None)
            continue
        identities.append([status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns])
    return identities


def _built_databases(path: Path) -> list[Path]:
    return [
        database_path(path, suffix) for suffix in _DATABASE_SUFFIXES if database_path(path, suffix).exists()
    ]


def database_path(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _is_current(path: Path, content: bytes, suffix: str | None) -> bool:
    try:
        if read_regular(path) != content:
            return False
    except OSError:
        return False
    return suffix is None or database_path(path, suffix).exists()


def _read_include(spec: MapConfig) -> bytes:
    if spec.include is None:
        return b""
    try:
        return read_regular(spec.include)
    except OSError as error:
        raise MapBuildError(f"cannot read include file {spec.include}: {error.strerror}") from None


def _build_and_install(
    spec: MapConfig,
    content: bytes,
    database_type: str | None,
    suffix: str | None,
    ipv4_only: bytes | None = None,
) -> None:
    import shutil
    import tempfile

    directory = spec.path.parent
    try:
        workspace = Path(tempfile.mkdtemp(prefix=f".{spec.path.name}.", suffix=".tmp", dir=directory))
    except OSError as error:
        raise StateWriteError(f"cannot write map {spec.path}: {error.strerror}", error.errno) from None
    try:
        text = workspace / spec.path.name
        with open(text, "xb") as stream:
            stream.write(content)
            os.fchmod(stream.fileno(), MAP_MODE)
            stream.flush()
            os.fsync(stream.fileno())
        built = [text]
        if database_type is not None and suffix is not None:
            try:
                _build_database(spec, text, database_type)
            except MapBuildError as error:
                if ipv4_only is None:
                    raise
                with open(text, "wb") as stream:
                    stream.write(ipv4_only)
                    os.fsync(stream.fileno())
                _build_database(spec, text, database_type)
                log.warning(
                    "%s: IPv6 leases left out: %s (install ucspi-tcp-ipv6 for IPv6 clients)", spec.path, error
                )
            database = database_path(text, suffix)
            os.chmod(database, MAP_MODE)  # makemap makes it 0640; the MTA's daemons must read it
            with open_regular(database) as stream:
                os.fsync(stream.fileno())
            built.insert(0, database)
        faults.point(f"{spec.path.name}:built")
        for file in built:
            replaced = _open_quietly(directory / file.name)
            os.replace(file, directory / file.name)
            faults.point(f"{spec.path.name}:renamed{file.suffix or '-text'}")
            if replaced is not None:
                _mark_replaced(replaced)
        fsync_directory(directory)
        if spec.mta == "courier":
            # makesmtpaccess reads every file of the directory (a file name
            # ending in `~` or `.dpkg-*` aside; our workspace is a directory,
            # which it skips) into smtpaccess.dat: only once the text is in
            # place. Until it succeeds, the record is not updated, so the
            # next run builds again.
            _run(["makesmtpaccess"], "makesmtpaccess", spec.path, for_map=spec)
            faults.point(f"{spec.path.name}:makesmtpaccess")
    except OSError as error:
        raise StateWriteError(f"cannot install map {spec.path}: {error.strerror}", error.errno) from None
    finally:
        # Also takes whatever postmap or makemap left beside the text.
        shutil.rmtree(workspace, ignore_errors=True)


_NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_ROOM_MESSAGE = "no room on its filesystem"
_REWRITTEN = "rewrote it with only the leases in force, after removing the old one to make room"
# Room a build needs beyond its text: postmap's and makemap's smallest databases are 12 KiB.
_BUILD_MARGIN = 64 * 1024


def _lacks_room(error: StateWriteError | MapBuildError, directory: Path, content: bytes) -> bool:
    """Whether a build failed for want of room on the map's filesystem (or quota).

    Our own writes carry their errno. A tool's failure is judged by the room
    left (its workspace is gone by now) and, for a quota, which statvfs does
    not show, by the system's message for it, which postmap and makemap print.
    """
    if isinstance(error, StateWriteError):
        return error.errno in _NO_ROOM_ERRNOS
    try:
        filesystem = os.statvfs(directory)
    except OSError:
        return False
    free_blocks = filesystem.f_bfree if os.geteuid() == 0 else filesystem.f_bavail
    if free_blocks * filesystem.f_frsize < 4 * len(content) + _BUILD_MARGIN:
        return True
    return any(os.strerror(code) in str(error) for code in _NO_ROOM_ERRNOS)


def _outlives(spec: MapConfig, content: bytes, files: list[Path], record: MapRecord | None) -> bool:
    """Whether the installed map may let a client relay that `content` no longer lists.

    Only a map whose files are those recorded for its text is known to hold
    that text; then it outlives its leases when a line of it is not in
    `content` (an ended or flushed lease, a changed include). A map that only
    lacks new leases is safe to keep: relay waits, it never outlives a lease.
    """
    if not any(os.path.lexists(file) for file in files):
        return False
    try:
        installed = read_regular(spec.path)
    except OSError:
        return True
    if record is None or not record.matches(spec, hashlib.sha256(installed).hexdigest(), files):
        return True
    return not set(installed.splitlines()) <= set(content.splitlines())


def _install_without_room(
    build: tuple[MapConfig, bytes, str | None, str | None, bytes | None], files: list[Path], outlives: bool
) -> bool:
    """Install a map whose build found no room: retry once, then, for a map that
    would keep relay open beyond a lease, remove it and build again in its room.

    Returns whether the old map was removed to make room, once the new one is
    in place; else raises MapNoRoomError saying what the map holds now.

    The interface promises that every map exists, so that the MTA never fails
    on a missing map; that relay never outlives its lease comes first. While
    the map is missing, the MTA's lookups fail, which Postfix and Exim answer
    with a temporary error (4xx): clients are deferred, nobody relays.
    """
    spec = build[0]
    # Whatever a failed attempt left beside the map (we hold the lock) is ours.
    remove_leftovers(spec.path)
    try:
        _build_and_install(*build)
        return False
    except (StateWriteError, MapBuildError) as error:
        if not outlives:
            raise MapNoRoomError(
                f"map {spec.path}: {_NO_ROOM_MESSAGE}: kept it as it was (no lease in it has ended; "
                f"new leases wait for room): {error}"
            ) from None
    # The database first: a text without its database is no relay.
    for file in reversed(files):
        with contextlib.suppress(OSError):
            os.unlink(file)
    with contextlib.suppress(OSError):
        fsync_directory(spec.path.parent)
    faults.point(f"{spec.path.name}:removed-for-room")
    try:
        _build_and_install(*build)
        return True
    except (StateWriteError, MapBuildError) as error:
        log.info("%s: rebuilt in its own room, still: %s", spec.path, error)
    remove_leftovers(spec.path)
    for file in reversed(files):
        with contextlib.suppress(OSError):
            os.unlink(file)
    if spec.mta == "courier":
        # smtpaccess.dat (elsewhere) still holds the removed text's leases: rebuild it without.
        with contextlib.suppress(MapBuildError):
            _run(["makesmtpaccess"], "makesmtpaccess", spec.path)
    raise MapNoRoomError(
        f"map {spec.path}: {_NO_ROOM_MESSAGE}: removed it, since it held ended leases; "
        f"the MTA will defer clients until there is room and a run rebuilds it"
    )


def _open_quietly(path: Path) -> int | None:
    try:
        # Only to touch its mtime: a FIFO planted at the name must not block.
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def _mark_replaced(descriptor: int) -> None:
    """Move the replaced file's mtime forward, on the inode the MTA may still hold open.

    Postfix notices a replaced table by its link count, and Exim re-reads its
    file; sendmail only reopens a map whose open file's mtime has grown.
    """
    try:
        old = os.fstat(descriptor).st_mtime
        later = max(time.time(), old + 1)
        os.utime(descriptor, (later, later))
    except OSError:
        pass  # only a hint to a long-running sendmail; the new map is in place
    finally:
        os.close(descriptor)


def _build_database(spec: MapConfig, text: Path, database_type: str) -> None:
    if spec.mta == "sendmail":
        with open(text, "rb") as stdin:
            _run(["makemap", database_type, str(text)], "makemap", spec.path, stdin=stdin, for_map=spec)
    elif spec.mta == "qmail":
        # tcprules writes the temporary name, then renames it to the CDB; both
        # are in our private workspace, so no other process's name is taken.
        database = database_path(text, ".cdb")
        with open(text, "rb") as stdin:
            _run(
                ["tcprules", str(database), str(database_path(text, ".tmp"))],
                "tcprules",
                spec.path,
                stdin=stdin,
                for_map=spec,
            )
    else:
        _run(["postmap", f"{database_type}:{text}"], "postmap", spec.path, for_map=spec)


def run_tool(command: list[str], tool: str, needed_by: str = "") -> str:
    """Run a tool for its output; MapBuildError (69) with its message when it fails.
    `needed_by` says, when the tool is missing, what in the configuration needs it."""
    return _run(command, tool, needed_by=needed_by)


# The tools each MTA's maps are built with, and the Debian package that has them.
_MTA_TOOLS = {
    "postfix": ("Postfix's postconf and postmap", "postfix"),
    "sendmail": ("sendmail's makemap", "sendmail-bin"),
    "qmail": ("tcprules", "ucspi-tcp (or ucspi-tcp-ipv6)"),
    "courier": ("Courier's makesmtpaccess", "courier-mta"),
}


def missing_tool_message(
    tool: str, spec: MapConfig, number: int | None = None, config_file: Path | None = None
) -> str:
    """What to do when `tool` is not found for the map `spec` (the `number`th [[map]]
    of `config_file`): the MTA to install, or the setting that needs no tool."""
    needs, package = _MTA_TOOLS.get(spec.mta, (tool, tool))
    which = f"[[map]] {number}" if number else "the [[map]]"
    where = f" in {config_file}" if config_file else ""
    instead = (
        'set type = "texthash" (no postmap) or another mta' if spec.mta == "postfix" else "set another mta"
    )
    return (
        f"{tool} not found on PATH ({os.environ.get('PATH', '')}): {which} "
        f'(mta = "{spec.mta}", {spec.path}) needs {needs}; install {package}, or {instead}{where}'
    )


def _run(
    command: list[str],
    tool: str,
    map_path: Path | None = None,
    stdin: IO[bytes] | None = None,
    for_map: MapConfig | None = None,
    needed_by: str = "",
) -> str:
    """`for_map`, or else `needed_by`, says what needs the tool when it is missing."""
    import subprocess  # only a run that builds a map pays for it

    subject = f"{tool} for {map_path}" if map_path else tool
    try:
        finished = subprocess.run(
            command,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_TOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        if for_map is not None:
            raise MapBuildError(missing_tool_message(tool, for_map)) from None
        needed = f": {needed_by}" if needed_by else ""
        raise MapBuildError(f"{tool} not found on PATH ({os.environ.get('PATH', '')}){needed}") from None
    except subprocess.TimeoutExpired:
        raise MapBuildError(f"{subject} did not finish within {_TOOL_TIMEOUT_SECONDS}s") from None
    if finished.returncode != 0:
        # One line, whatever the tool printed: the interface promises one line on stderr.
        message = " ".join((finished.stderr or finished.stdout).split())
        raise MapBuildError(f"{subject} failed: {message or f'exit status {finished.returncode}'}")
    output: str = finished.stdout
    return output
