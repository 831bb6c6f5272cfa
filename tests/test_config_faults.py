"""Configuration faults: a configuration that cannot be loaded still prunes the
maps, and every wrong value exits 78 naming its key (never 70, never a traceback)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exactcron.cli import main
from tests.support.lines import dovecot_login
from tests.support.maps import postmap_query
from tests.support.runner import invoke
from tests.support.tools import require_tool
from tests.support.users import SYSTEM_PYTHON, shared_root, state_dir_of_nobody

# exactcron with the default state directory moved to argv[1] (the real one,
# /var/lib/exactcron, is the installed package's).
WITH_DEFAULT_STATE_DIR = (
    "import sys, exactcron.config as config; config.DEFAULT_STATE_DIR = sys.argv.pop(1); "
    "from exactcron.cli import main; main(prog_name='exactcron')"
)
LOGIN_AT = "2026-11-25T17:50:00+00:00"  # with timeout 30m, the lease ends at 18:20
IN_FORCE = "2026-11-25T18:00:00+00:00"
ENDED = "2026-11-25T18:30:00+00:00"


@pytest.fixture
def site() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users and make a root-owned configuration")
    require_tool("setpriv")
    require_tool("postmap")
    with shared_root("exactcron-config-faults-") as root:
        log = root / "mail.log"
        log.write_text(dovecot_login("192.0.2.10", time=LOGIN_AT) + "\n")
        log.chmod(0o644)
        state = state_dir_of_nobody(root)
        config = root / "exactcron.toml"
        config.write_text(
            f'state_dir = "{state}"\ntimeout = "30m"\n'
            f'[[source]]\npath = "{log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
            f'[[map]]\nmta = "postfix"\npath = "{state / "relay"}"\ntype = "hash"\n'
        )
        config.chmod(0o644)
        yield root


def update_as_nobody(site: Path, now: str, default_state_dir: Path) -> subprocess.CompletedProcess[str]:
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON]
    command += ["-c", WITH_DEFAULT_STATE_DIR, str(default_state_dir)]
    command += ["--config", str(site / "exactcron.toml"), "--now", now, "update"]
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site / "lib")}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/", check=False)


def relays(site: Path, address: str) -> bool:
    """Whether Postfix's lookup in the installed map answers OK for `address`."""
    found = postmap_query(site / "state" / "relay", address)
    return found.returncode == 0 and found.stdout.strip() == "OK"


def _unreadable(config: Path) -> None:
    os.chown(config, 0, 0)
    config.chmod(0o600)


def _missing(config: Path) -> None:
    config.rename(config.with_name("moved-away.toml"))


def _not_toml(config: Path) -> None:
    with config.open("a") as stream:
        stream.write("[[source]\nthis is not = = TOML\n")


def _a_directory(config: Path) -> None:
    config.unlink()
    config.mkdir()


def _a_nul_byte(config: Path) -> None:
    with config.open("a") as stream:
        stream.write('log_file = "/tmp/x\0y"\n')


@pytest.mark.parametrize(
    ("fault", "names_its_state_dir"),
    [
        (_unreadable, False),
        (_missing, False),
        (_a_directory, False),
        (_not_toml, True),
        (_a_nul_byte, True),
    ],
)
def test_a_configuration_that_cannot_be_loaded_still_ends_the_leases_in_the_maps(
    site: Path, fault: object, names_its_state_dir: bool
) -> None:
    state = site / "state"
    granted = update_as_nobody(site, IN_FORCE, state)
    assert (granted.returncode, granted.stderr) == (0, "")
    assert relays(site, "192.0.2.10")
    assert callable(fault)
    fault(site / "exactcron.toml")
    # Unreadable, missing or a directory: the default state directory is where the
    # state lives. Otherwise the one the configuration still names.
    default = site / "no-such-state" if names_its_state_dir else state
    for _ in range(2):  # every run, not only the first
        failed = update_as_nobody(site, ENDED, default)
        assert failed.returncode == 78, failed.stderr
        assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("exactcron: "), failed.stderr
        assert "Traceback" not in failed.stderr
        assert not relays(site, "192.0.2.10")
    assert (state / "relay").read_text() == ""


# -- every key of the schema, every hostile value -------------------------------

SITE_MATCH = r"OK user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]$"
# Where each key lives; the base configuration holds a value for each that is valid.
KEYS: list[tuple[str | int, ...]] = [
    ("state_dir",),
    ("timeout",),
    ("ignore",),
    ("lock_wait",),
    ("log_file",),
    ("metrics_file",),
    ("stale_after",),
    ("source",),
    ("map",),
    ("rule",),
    ("store",),
    *(
        ("source", 0, key)
        for key in (
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
        )
    ),
    *(("map", 0, key) for key in ("mta", "path", "type", "include", "value")),
    *(("rule", "site", key) for key in ("program", "match", "needle")),
    ("store", "url"),
    ("store", "schema"),
    ("guard",),
    *(
        ("guard", key)
        for key in (
            "enabled",
            "max_addresses_per_user",
            "window",
            "on_exceed",
            "max_users_per_address",
            "refuse_shared",
            "shared_ranges",
        )
    ),
]


def hostile_values(root: Path) -> list[object]:
    a_file = root / "a-file"
    return [
        "x\0y",
        f"{root}/x\0y",
        "",
        " ",
        "/",
        "rel/x",  # relative, beside the configuration, in a directory that is missing
        "rel.x",  # relative, beside the configuration
        "/" + "a" * 300,  # a name longer than any file system takes
        "/a" * 2100,  # a path longer than PATH_MAX
        0,
        -1,
        10**30,
        True,
        1.5,
        float("nan"),
        float("inf"),
        [],
        [""],
        ["x\0y"],
        [1],
        {},
        {"a": 1},
        str(root),  # a directory
        str(a_file),  # a file
        str(a_file / "below"),  # below a file
        "~nosuchuser/x",
    ]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else ("inf" if value > 0 else "-inf")
            if abs(value) == float("inf")
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_string(key)} = {_toml_value(item)}" for key, item in value.items()) + "}"


def _toml_string(text: str) -> str:
    """A TOML basic string: control characters, quote and backslash escaped, the rest as is."""
    escaped = (f"\\u{ord(char):04x}" if ord(char) < 0x20 or char in '\x7f"\\' else char for char in text)
    return '"' + "".join(escaped) + '"'


def _toml(document: dict[str, Any]) -> str:
    """The document as TOML: every table inline, on one line per top-level key."""
    lines = []
    for key, value in document.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            lines += [
                f"[[{key}]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in item.items())
                for item in value
            ]
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}\n")
    return "".join(lines)


def base_document(root: Path, key: tuple[str | int, ...]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "timeout": "30m",
        "source": [{"path": str(root / "mail.log"), "server": "dovecot", "hosts": ["mail"]}],
        "map": [{"mta": "exim", "path": str(root / "relay-exim")}],
        "rule": {"site": {"program": "mypopd", "match": SITE_MATCH}},
    }
    if key[0] == "store" and len(key) > 1:
        # The store is never reached: only a value that is wrong is tried on it.
        document["store"] = {"url": "postgresql://exactcron@127.0.0.1:1/mail"}
    if key[0] == "guard" and len(key) > 1:
        document["guard"] = {}
    if key[-1] in ("journal_directory",):
        document["source"][0] = {"journal": "dovecot.service", "server": "dovecot"}
    if key[-1] in ("type",):
        document["map"][0]["mta"] = "postfix"
    if key[-1] in ("value",):
        document["map"][0].update(mta="postfix", type="texthash")
    return document


def _set(document: dict[str, Any], key: tuple[str | int, ...], value: object) -> None:
    where: Any = document
    for part in key[:-1]:
        where = where[part]
    where[key[-1]] = value


def _name(key: tuple[str | int, ...]) -> str:
    """The key as messages name it: `source[0].path`, `rule.site.match`."""
    name = str(key[0])
    for part in key[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
# A carriage return in a path that check reports on once made its one line two.
@example(key=("source", 0, "olddir"), pick=-1, text="0\r", command="check")
@given(
    key=st.sampled_from(KEYS),
    pick=st.integers(min_value=0),
    text=st.text(max_size=12),
    command=st.sampled_from(["check", "update"]),
)
def test_every_wrong_value_of_every_key_exits_78_naming_the_key(
    key: tuple[str | int, ...], pick: int, text: str, command: str
) -> None:
    with tempfile.TemporaryDirectory(prefix="exactcron-hostile-") as directory:
        root = Path(directory)
        (root / "a-file").write_text("")
        (root / "mail.log").write_text(dovecot_login("192.0.2.10", time=LOGIN_AT) + "\n")
        values = [*hostile_values(root), text]
        value = values[pick % len(values)]
        document = base_document(root, key)
        _set(document, key, value)
        config = root / "exactcron.toml"
        config.write_text(_toml(document))
        result = invoke(main, ["--config", str(config), "--now", IN_FORCE, command], catch_exceptions=False)
        stderr = result.stderr
        shown = f"{_name(key)} = {value!r}: exit {result.exit_code}: {stderr!r}"
        assert "Traceback" not in stderr, shown
        if result.exit_code == 0:
            return
        if command == "check" and result.exit_code in (66, 69, 73):
            # A valid configuration; check reports what the cron job could not read or write.
            assert stderr.splitlines()[-1].startswith("exactcron: as user root: "), shown
            return
        if key in (("source", 0, "path"), ("source", 0, "journal_directory")) and result.exit_code == 66:
            # What the source reads is unreadable when read (a log that is a directory,
            # a journal directory missing), like any unreadable log: the other sources are read.
            assert stderr.count("\n") == 1 and ("cannot read" in stderr or "log " in stderr), shown
            return
        assert result.exit_code == 78, shown
        assert stderr.count("\n") == 1, shown
        # The key's own name, or the table that holds it when the table itself is wrong.
        assert (
            f": {_name(key)}" in stderr
            or f": {_name(key[:1])}" in stderr
            # A user checked when the log is read: `written_by of LOG: no such user`.
            or f": {key[-1]} of " in stderr
        ), shown
