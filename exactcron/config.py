"""The TOML configuration, checked whole at load: every error names its key.

Over 400 lines: one check per key, each naming its key in its error, read
against exactcron.toml(5) as one piece; its defaults (DEFAULT_*) have their
one home here.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from datetime import UTC, timedelta, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exactcron.addresses import HOST_NAME, Network, parse_network
from exactcron.errors import ConfigError
from exactcron.model import MANUAL
from exactcron.records import dataclass, field
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.rule import Rule

DEFAULT_CONFIG = Path("/etc/exactcron/exactcron.toml")
MTAS = ("postfix", "exim", "sendmail", "qmail", "courier")
# The MTAs whose map gives each address a value (`[[map]] value`), and its default.
MAP_VALUE_DEFAULTS = {"postfix": "OK", "sendmail": "RELAY"}
# The word in `ignore` that stands for the networks Postfix trusts.
MYNETWORKS = "mynetworks"
# Patterns a run that loads a plain configuration never needs are kept as
# text: re compiles (and caches) them at their first use.
MAP_VALUE = r"[\x21-\x7e]{1,200}"
POSTFIX_TYPES = ("hash", "btree", "lmdb", "cdb", "texthash")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_RULE_NAME = r"[A-Za-z0-9_.\-]{1,64}"
# Without re.ASCII: a configured name holding any Unicode space is refused too
# (a log's host field is read as bytes, where no such name can come out whole).
_HOST_NAME = re.compile(HOST_NAME)
# A POSIX-ish user name.
_USER_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}\$?"
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

# The defaults of exactcron.toml(5), in its spelling, each in this one place:
# `check` without a configuration and `import-exact` use them too.
DEFAULT_STATE_DIR = "/var/lib/exactcron"
DEFAULT_TIMEOUT = "30m"
DEFAULT_SESSION_MAX = "12h"
DEFAULT_IGNORE = ("127.0.0.0/8", "::1/128")
DEFAULT_LOCK_WAIT = "45s"
DEFAULT_STALE_AFTER = "5m"
DEFAULT_RUN_DEADLINE = "50s"


@dataclass(frozen=True)
class SourceConfig:
    """A `[[source]]`: a log file (or the journal's units) and the rules it is read with."""

    # For a journal source: `journal:UNIT[,UNIT...]`, its name in status and its checkpoint key.
    path: Path
    rules: tuple[Rule, ...]
    zone: tzinfo
    olddir: Path | None = None  # where logrotate moves rotated files (`olddir`)
    rotated: tuple[str, ...] = ()  # globs (absolute) naming other rotated copies of the log
    journal: tuple[str, ...] = ()  # systemd units whose journal entries are read instead of a file
    journal_directory: Path | None = None  # a journal directory to read instead of the system's
    # Lowercased syslog host names whose lines count; None: every host (`["*"]`).
    hosts: frozenset[str] | None = None
    # The server writes this log file itself, as this user (`written_by`): refused
    # when anyone else but root can write it.
    written_by: str | None = None
    # The log is written by rsyslog with the sender's uid after each line
    # (`syslog_senders`): only lines these users sent count.
    syslog_senders: tuple[str, ...] = ()
    # `hold_while_connected`: a login's lease lasts while its session is open
    # (sessions.py), never longer than `session_max` after the login.
    hold_while_connected: bool = False
    session_max: timedelta = timedelta(hours=12)

    @property
    def forgeable(self) -> bool:
        """A plain syslog-fed file: any local user can write a line that counts."""
        return not self.journal and self.written_by is None and not self.syslog_senders


@dataclass(frozen=True)
class MapConfig:
    """A `[[map]]`: the relay map of one MTA."""

    mta: str
    path: Path
    type: str | None = None  # postfix only; None: postconf's default_database_type
    include: Path | None = None  # sendmail and qmail: the site's own access entries or rules
    value: str | None = None  # postfix and sendmail: what each entry maps to; None: the MTA's default

    @property
    def entry_value(self) -> str:
        return self.value if self.value is not None else MAP_VALUE_DEFAULTS.get(self.mta, "")


@dataclass(frozen=True)
class StoreConfig:
    """`[store]`: the PostgreSQL database the leases of many hosts are shared in."""

    url: str  # a libpq URI without a password (that comes from ~/.pgpass or PGPASSFILE)
    schema: str = "exactcron"


@dataclass(frozen=True)
class GuardConfig:
    """`[guard]`: limits on who relays (on by default; guard.py applies them)."""

    enabled: bool = True
    max_addresses_per_user: int = 10
    window: timedelta = timedelta(hours=1)
    on_exceed: str = "refuse"  # refuse | revoke
    max_users_per_address: int = 20
    refuse_shared: bool = False
    # RFC 6598 shared address space (carrier-grade NAT): one address, many users.
    shared_ranges: tuple[Network, ...] = (parse_network("100.64.0.0/10"),)


@dataclass(frozen=True)
class Config:
    """The whole configuration, checked."""

    path: Path
    state_dir: Path
    timeout: timedelta
    ignore: tuple[Network, ...]
    lock_wait: timedelta
    log_file: Path | None
    sources: tuple[SourceConfig, ...]
    maps: tuple[MapConfig, ...]
    # `status` is unhealthy when no update succeeded for this long.
    stale_after: timedelta
    # No run holds the lock longer than this: reading stops in time to save, prune and render.
    run_deadline: timedelta
    # Every [rule.NAME], used by a source or not, so `check --server NAME` finds it.
    site_rules: Mapping[str, Rule] = field(default_factory=dict)
    metrics_file: Path | None = None  # Prometheus textfile, rewritten after every update
    store: StoreConfig | None = None  # None: the lease file in state_dir
    # `ignore` holds "mynetworks": Postfix's trusted networks are added at each run
    # (exactcron.mynetworks), not read at load.
    ignore_mynetworks: bool = False
    guard: GuardConfig = GuardConfig()


def parse_duration(value: object) -> timedelta:
    """`90`, `90s`, `30m`, `2h`, `7d` (or a TOML integer of seconds). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, m, h or d)")
    if seconds <= 0 or seconds > 366 * 86400:
        raise ValueError(f"{value!r} is out of range (more than 0, at most 366d)")
    return timedelta(seconds=seconds)


def own_host_names() -> frozenset[str]:
    """The names this machine's syslog writes in the host field: its host name and short name."""
    import socket

    name = socket.gethostname().lower()
    return frozenset({name, name.split(".", 1)[0]} - {""})


# The tz database's names of UTC itself. Such a zone is datetime's UTC: the
# same instants, without loading zoneinfo (a run every minute pays for the import).
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})
LOCALTIME = Path("/etc/localtime")


def zone_named(name: str) -> tzinfo | None:
    """The zone of a tz database name such as Europe/Berlin; None when there is none."""
    if name in _UTC_NAMES:
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def system_zone() -> tzinfo:
    """The zone the system writes local stamps in: $TZ, else /etc/localtime, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        zone = zone_named(name)
        if zone is not None:
            return zone
    if _names_utc(Path(os.path.realpath(LOCALTIME))):
        return UTC
    from zoneinfo import ZoneInfo

    try:
        with open(LOCALTIME, "rb") as stream:
            return ZoneInfo.from_file(stream, key="localtime")
    except (OSError, ValueError):
        return UTC


def _names_utc(zone_file: Path) -> bool:
    """Whether a zone file is the tz database's UTC (where Debian links /etc/localtime
    by default); not right/UTC, a zone with leap seconds."""
    return zone_file.parts[-2:] == ("zoneinfo", "UTC") or zone_file.parts[-3:] == ("zoneinfo", "Etc", "UTC")


class _Reader:
    """Pulls typed values out of a TOML table, naming the key on any error."""

    def __init__(self, file: Path, table: dict[str, Any], where: str) -> None:
        self.file = file
        self.table = table
        self.where = where

    def fail(self, key: str, message: str) -> ConfigError:
        name = f"{self.where}.{key}" if self.where else key
        return ConfigError(f"{self.file}: {name}: {message}")

    def refuse_unknown(self, known: set[str]) -> None:
        for key in self.table:
            if key not in known:
                expected = ", ".join(sorted(known))
                raise self.fail(key, f"unknown key (expected one of: {expected})")

    def string(self, key: str, default: str | None = None) -> str | None:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {_shown(value)}")
        if "\0" in value:
            # No file name, user, zone or pattern holds one; the OS would refuse it mid-run.
            raise self.fail(key, f"holds a NUL character: {_shown(value)}")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise self.fail(key, "missing (required)")
        return value

    def path(self, key: str, default: str | None = None, kind: str | None = None) -> Path | None:
        """A path; `kind` "file" or "directory" refuses what exists as the other kind."""
        value = self.string(key, default)
        if value is None:
            return None
        try:
            path = Path(value).expanduser()
            # Relative paths are read beside the configuration file, so a config
            # works the same from any working directory (cron's is $HOME).
            path = path if path.is_absolute() else (self.file.parent / path).resolve()
        except (OSError, RuntimeError) as error:  # ~nosuchuser, a symlink loop
            raise self.fail(key, f"{_shown(value)} cannot be resolved: {error}") from None
        self.check_path(key, path, kind)
        return path

    def check_path(self, key: str, path: Path, kind: str | None) -> None:
        """Refuse what the OS would refuse mid-run: too long, or of the wrong kind."""
        encoded = os.fsencode(path)
        if len(encoded) >= _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
            raise self.fail(key, f"{_shown(str(path))} is too long for a file name")
        for ancestor in path.parents:
            found = _kind_of(ancestor)
            if found == "file":
                raise self.fail(key, f"{ancestor} is not a directory")
            if found == "directory":
                break
        found = _kind_of(path)
        if kind == "file" and (found == "directory" or not path.name):
            raise self.fail(key, f"{path} is a directory; expected a file")
        if kind == "directory" and found == "file":
            raise self.fail(key, f"{path} is not a directory")

    def duration(self, key: str, default: str) -> timedelta:
        try:
            return parse_duration(self.table.get(key, default))
        except ValueError as error:
            raise self.fail(key, str(error)) from None

    def string_list(self, key: str, default: list[str]) -> list[str]:
        value = self.table.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(key, f"expected a string or a list of strings, got {_shown(value)}")
        if any("\0" in item for item in value):
            raise self.fail(key, f"holds a NUL character: {_shown(value)}")
        return value


# Linux's limits on a path and on one of its names (bytes); beyond them every call fails.
_PATH_MAX = 4096
_NAME_MAX = 255
# How much of a wrong value a message quotes: one line stays readable.
_SHOWN_CHARS = 80


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _kind_of(path: Path) -> str | None:
    """ "file", "directory", or None when it is missing or cannot be examined (then the run says why)."""
    try:
        status = path.stat()
    except (OSError, ValueError):
        return None
    return "directory" if stat.S_ISDIR(status.st_mode) else "file"


def load_config(path: Path) -> Config:
    try:
        status = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (give --config or set EXACTCRON_CONFIG)"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    if status.st_mode & stat.S_IWOTH:
        # Whoever can write the configuration can grant anyone relay.
        raise ConfigError(f"{path}: is writable by every user; refusing it (chmod o-w)")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(path, document)


def parse_config(path: Path, document: dict[str, Any]) -> Config:
    top = _Reader(path, document, "")
    top.refuse_unknown(
        {
            "state_dir",
            "timeout",
            "ignore",
            "lock_wait",
            "log_file",
            "metrics_file",
            "stale_after",
            "run_deadline",
            "source",
            "map",
            "rule",
            "store",
            "guard",
        }
    )

    site_rules = _site_rules(path, document.get("rule", {}))
    timeout = top.duration("timeout", DEFAULT_TIMEOUT)
    ignore = []
    ignore_mynetworks = False
    for text in top.string_list("ignore", list(DEFAULT_IGNORE)):
        if text.strip() == MYNETWORKS:
            ignore_mynetworks = True
            continue
        try:
            ignore.append(parse_network(text))
        except ValueError:
            raise top.fail("ignore", f"{text!r} is not an address or network") from None
    lock_wait = top.duration("lock_wait", DEFAULT_LOCK_WAIT)
    state_dir = top.path("state_dir", DEFAULT_STATE_DIR, kind="directory")
    assert state_dir is not None
    if state_dir == Path("/"):
        # Its files, lock and hand-over of root's files need a directory of exactcron's own.
        raise top.fail(
            "state_dir", f"/ is not a directory of exactcron's own (for example {DEFAULT_STATE_DIR})"
        )

    store = _store(path, document.get("store"))
    # With a shared store, a host may only read logins, or only render maps.
    sources = _tables(top, "source", optional=store is not None)
    maps = _tables(top, "map", optional=store is not None)
    return Config(
        path=path,
        state_dir=state_dir,
        timeout=timeout,
        ignore=tuple(ignore),
        lock_wait=lock_wait,
        log_file=top.path("log_file", kind="file"),
        sources=tuple(
            _source(path, index, table, site_rules, timeout) for index, table in enumerate(sources)
        ),
        maps=tuple(_map(path, index, table, state_dir) for index, table in enumerate(maps)),
        site_rules=site_rules,
        stale_after=top.duration("stale_after", DEFAULT_STALE_AFTER),
        run_deadline=_run_deadline(top),
        metrics_file=top.path("metrics_file", kind="file"),
        store=store,
        ignore_mynetworks=ignore_mynetworks,
        guard=_guard(path, document.get("guard")),
    )


def _run_deadline(top: _Reader) -> timedelta:
    """`run_deadline`: 0 or absent means the default."""
    value = top.table.get("run_deadline", 0)
    if value is not False and isinstance(value, int | float) and value == 0:
        return parse_duration(DEFAULT_RUN_DEADLINE)
    if isinstance(value, str) and (match := _DURATION.match(value)) and float(match.group(1)) == 0:
        return parse_duration(DEFAULT_RUN_DEADLINE)
    return top.duration("run_deadline", DEFAULT_RUN_DEADLINE)


def _tables(top: _Reader, key: str, optional: bool = False) -> list[dict[str, Any]]:
    value = top.table.get(key)
    if value is None and optional:
        return []
    if value is None:
        raise top.fail(key, f"missing: add at least one [[{key}]] table")
    if not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
        raise top.fail(key, f"expected one or more [[{key}]] tables")
    return value


def _guard(path: Path, table: object) -> GuardConfig:
    """`[guard]`, every key checked; absent, the defaults (the guard is on)."""
    if table is None:
        return GuardConfig()
    reader = _Reader(path, table if isinstance(table, dict) else {}, "guard")
    if not isinstance(table, dict):
        raise reader.fail("", "expected a [guard] table")
    reader.refuse_unknown(
        {
            "enabled",
            "max_addresses_per_user",
            "window",
            "on_exceed",
            "max_users_per_address",
            "refuse_shared",
            "shared_ranges",
        }
    )
    default = GuardConfig()
    on_exceed = reader.string("on_exceed", default.on_exceed)
    if on_exceed not in ("refuse", "revoke"):
        raise reader.fail("on_exceed", f'expected "refuse" or "revoke", got {_shown(on_exceed)}')
    ranges = []
    for text in reader.string_list("shared_ranges", [str(network) for network in default.shared_ranges]):
        try:
            ranges.append(parse_network(text))
        except ValueError:
            raise reader.fail("shared_ranges", f"{_shown(text)} is not an address or network") from None
    return GuardConfig(
        enabled=_flag(reader, "enabled", default.enabled),
        max_addresses_per_user=_count(reader, "max_addresses_per_user", default.max_addresses_per_user),
        window=reader.duration("window", "1h"),
        on_exceed=on_exceed,
        max_users_per_address=_count(reader, "max_users_per_address", default.max_users_per_address),
        refuse_shared=_flag(reader, "refuse_shared", default.refuse_shared),
        shared_ranges=tuple(ranges),
    )


def _flag(reader: _Reader, key: str, default: bool) -> bool:
    value = reader.table.get(key, default)
    if not isinstance(value, bool):
        raise reader.fail(key, f"expected true or false, got {_shown(value)}")
    return value


def _count(reader: _Reader, key: str, default: int) -> int:
    value = reader.table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise reader.fail(key, f"expected a whole number from 1 to 1000000, got {_shown(value)}")
    return value


_SCHEMA_NAME = r"[a-z_][a-z0-9_]{0,62}"


def _store(path: Path, table: object) -> StoreConfig | None:
    if table is None:
        return None
    reader = _Reader(path, table if isinstance(table, dict) else {}, "store")
    if not isinstance(table, dict):
        raise reader.fail("", "expected a [store] table with url")
    reader.refuse_unknown({"url", "schema"})
    url = reader.required_string("url")
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise reader.fail("url", "expected a libpq URI such as postgresql://exactcron@db.example.net/mail")
    try:
        password = parts.password
    except ValueError:
        password = None
    if password is not None or "password" in parse_qs(parts.query):
        # The configuration is readable by more than the store's role, and
        # the URL is shown in messages; a password lives in ~/.pgpass.
        raise ConfigError(f"{path}: store.url: holds a password; put it in ~/.pgpass (or PGPASSFILE) instead")
    schema = reader.string("schema", "exactcron")
    assert schema is not None
    if not re.fullmatch(_SCHEMA_NAME, schema):
        raise reader.fail("schema", f"expected a lower-case SQL name such as exactcron, got {schema!r}")
    return StoreConfig(url, schema)


def _site_rules(path: Path, tables: object) -> dict[str, Rule]:
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: rule: expected [rule.NAME] tables")
    rules = {}
    if tables:
        # Imported here: a configuration without site rules never loads their engine.
        from exactcron.rules.site import site_rule
    for name, table in tables.items():
        if not re.fullmatch(_RULE_NAME, name):
            # The name is echoed in messages and output; keep it one plain word.
            raise ConfigError(f"{path}: rule.{name!r}: a rule name is letters, digits, '_', '.' or '-'")
        reader = _Reader(path, table if isinstance(table, dict) else {}, f"rule.{name}")
        if not isinstance(table, dict):
            raise reader.fail("", "expected a table with program and match")
        if name in BUILTIN_RULES or name == MANUAL:
            # `manual` marks leases granted by hand: a login must never pass for one.
            raise ConfigError(f"{path}: rule.{name}: clashes with the built-in rule of that name")
        reader.refuse_unknown({"program", "match", "needle", "connect", "end"})
        program = reader.required_string("program")
        match = reader.required_string("match")
        needles = reader.string_list("needle", [])
        # A two-line rule: the address on a connect line, the login on a later line of that process.
        connect = reader.string("connect", None)
        end = reader.string("end", None)
        try:
            rules[name] = site_rule(name, program, match, needles, connect, end)
        except ValueError as error:
            raise ConfigError(f"{path}: rule.{name}: {error}") from None
    return rules


def _source(
    path: Path, index: int, table: dict[str, Any], site_rules: dict[str, Rule], timeout: timedelta
) -> SourceConfig:
    reader = _Reader(path, table, f"source[{index}]")
    reader.refuse_unknown(
        {
            "path",
            "server",
            "timezone",
            "olddir",
            "rotated",
            "journal",
            "journal_directory",
            "hosts",
            "written_by",
            "syslog_senders",
            "hold_while_connected",
            "session_max",
        }
    )
    units = tuple(reader.string_list("journal", []))
    # Not kind="file": a log that is a directory is unreadable (66) at run time, like
    # any unreadable log, and the other sources are still read.
    log_path = reader.path("path")
    if log_path is not None and not log_path.name:
        raise reader.fail("path", f"{log_path} is a directory; expected the log file")
    if units and log_path is not None:
        raise reader.fail("journal", "give either path (a log file) or journal (systemd units), not both")
    if units:
        if not all(re.fullmatch(r"[A-Za-z0-9:_.@\-]{1,256}", unit) for unit in units):
            raise reader.fail(
                "journal", f"expected systemd unit names such as dovecot.service, got {units!r}"
            )
        log_path = Path("journal:" + ",".join(units))
    elif log_path is None:
        raise reader.fail("path", "missing (required): the log file to read (or journal = UNIT)")
    olddir = reader.string("olddir")
    if olddir is not None and units:
        raise reader.fail("olddir", "only a log file source has rotated files")
    rotated = reader.string_list("rotated", [])
    if rotated and units:
        raise reader.fail("rotated", "only a log file source has rotated files")
    if not all(pattern.strip() for pattern in rotated):
        raise reader.fail("rotated", "expected globs naming rotated copies of the log, got an empty one")
    if olddir is not None and not units:
        reader.check_path("olddir", _beside(reader, "olddir", log_path, olddir), "directory")
    for pattern in rotated:
        reader.check_path("rotated", _beside(reader, "rotated", log_path, pattern), None)
    journal_directory = reader.path("journal_directory", kind="directory")
    if journal_directory is not None and not units:
        raise reader.fail("journal_directory", "only a journal source reads a journal directory")
    names = reader.string_list("server", [])
    if not names:
        raise reader.fail("server", "missing (required): a rule name or a list of them")
    for name in names:
        if name not in BUILTIN_RULES and name not in site_rules:
            expected = ", ".join(sorted({*BUILTIN_RULES, *site_rules}))
            raise reader.fail("server", f"unknown rule {name!r} (expected one of: {expected})")
    zone_name = reader.string("timezone")
    zone = system_zone() if zone_name is None else zone_named(zone_name)
    if zone is None:
        raise reader.fail("timezone", f"unknown time zone {zone_name!r} (for example Europe/Berlin)")
    # Site rules cannot take a built-in name; a built-in rule is compiled only when named.
    rules = tuple(
        site_rules[name] if name in site_rules else BUILTIN_RULES[name] for name in dict.fromkeys(names)
    )
    written_by = reader.string("written_by")
    senders = tuple(reader.string_list("syslog_senders", []))
    if (written_by is not None or senders) and units:
        key = "written_by" if written_by is not None else "syslog_senders"
        raise reader.fail(key, "only a log file source has a writer; the journal's own fields are checked")
    if written_by is not None and senders:
        raise reader.fail("written_by", "give either written_by (the server's own file) or syslog_senders")
    for user in ([written_by] if written_by else []) + list(senders):
        if not re.fullmatch(_USER_NAME, user):
            raise reader.fail(
                "written_by" if user == written_by else "syslog_senders", f"{user!r} is not a user name"
            )
    return SourceConfig(
        log_path,
        rules,
        zone,
        olddir=None if olddir is None or units else _beside(reader, "olddir", log_path, olddir),
        rotated=tuple(str(_beside(reader, "rotated", log_path, pattern)) for pattern in rotated),
        journal=units,
        journal_directory=journal_directory,
        hosts=_hosts(reader),
        written_by=written_by,
        syslog_senders=senders,
        hold_while_connected=_flag(reader, "hold_while_connected", False),
        session_max=_session_max(reader, timeout),
    )


def _session_max(reader: _Reader, timeout: timedelta) -> timedelta:
    session_max = reader.duration("session_max", DEFAULT_SESSION_MAX)
    if session_max < timeout:
        # A held session must never end a lease before its login's own end.
        raise reader.fail(
            "session_max",
            f"{_shown(reader.table.get('session_max'))} is shorter than timeout"
            f" ({int(timeout.total_seconds())}s); expected at least the timeout",
        )
    return session_max


def _beside(reader: _Reader, key: str, log_path: Path, value: str) -> Path:
    """Like logrotate's own olddir, a relative olddir (or rotated glob) is read beside the log."""
    try:
        return log_path.parent / Path(value).expanduser()
    except RuntimeError as error:  # ~nosuchuser
        raise reader.fail(key, f"{_shown(value)} cannot be resolved: {error}") from None


def _hosts(reader: _Reader) -> frozenset[str] | None:
    names = reader.string_list("hosts", [])
    if "hosts" not in reader.table:
        return own_host_names()
    if names == ["*"]:
        return None
    if not names or not all(_is_host_name(name) for name in names):
        raise reader.fail("hosts", f'expected syslog host names, or ["*"] for every host, got {names!r}')
    return frozenset(name.lower() for name in names)


def _is_host_name(name: str) -> bool:
    """Whether `name` is a host name `hosts` may list: one a syslog host field can
    hold, without `*`. A log's host field may hold `*` (it then counts only under
    `["*"]`), but here `*` is the wildcard, which stands alone: `mail*` would
    read as a glob that the exact match never honours."""
    return "*" not in name and _HOST_NAME.fullmatch(name) is not None


def _map(path: Path, index: int, table: dict[str, Any], state_dir: Path) -> MapConfig:
    reader = _Reader(path, table, f"map[{index}]")
    reader.refuse_unknown({"mta", "path", "type", "include", "value"})
    mta = reader.required_string("mta")
    if mta not in MTAS:
        raise reader.fail("mta", f"unknown MTA {mta!r} (expected one of: {', '.join(MTAS)})")
    map_path = reader.path("path", kind="file")
    if map_path is None:
        raise reader.fail("path", "missing (required): where to write the map")
    if map_path.parent != state_dir and _missing(map_path.parent):
        # state_dir is created by the first run; any other directory of a map is the site's.
        raise reader.fail("path", f"{map_path.parent} does not exist; create it (the map's directory)")
    map_type = reader.string("type")
    if map_type is not None and mta != "postfix":
        raise reader.fail("type", f"only a postfix map has a type (this map is {mta})")
    if map_type is not None and map_type not in POSTFIX_TYPES:
        raise reader.fail("type", f"unknown type {map_type!r} (expected one of: {', '.join(POSTFIX_TYPES)})")
    include = reader.path("include", kind="file")
    if include is not None and mta not in ("sendmail", "qmail"):
        raise reader.fail("include", f"only a sendmail or qmail map has an include file (this map is {mta})")
    value = _map_value(reader, mta)
    return MapConfig(mta, map_path, map_type, include, value)


def _map_value(reader: _Reader, mta: str) -> str | None:
    if "value" not in reader.table:
        return None
    if mta not in MAP_VALUE_DEFAULTS:
        raise reader.fail("value", f"only a postfix or sendmail map has a value (this map is {mta})")
    value = reader.table["value"]
    # One word of printable ASCII: a space, a line's end or a NUL would
    # split the map's line or add a key of the value's own choosing.
    if not isinstance(value, str) or not re.fullmatch(MAP_VALUE, value):
        raise reader.fail(
            "value",
            f"expected one word of printable characters, no spaces, such as OK or RELAY, got {value!r}",
        )
    return value


def _missing(directory: Path) -> bool:
    """Whether a directory is missing (not merely hidden from the running user)."""
    try:
        os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def config_path(option: str | None) -> Path:
    if option:
        return Path(option)
    from_environment = os.environ.get("EXACTCRON_CONFIG")
    return Path(from_environment) if from_environment else DEFAULT_CONFIG
