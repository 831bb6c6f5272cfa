"""A wrong configuration exits 78 with one line naming the file, the key and what is expected."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exactcron import config as config_module
from exactcron.cli import FORGEABLE_WARNING, main
from exactcron.config import load_config, parse_duration, system_zone
from exactcron.timestamps import TimestampParser, parse_instant
from tests.support.runner import invoke
from tests.support.site import write_config

GOOD = """\
state_dir = "state"
timeout = "30m"
[[source]]
path = "mail.log"
server = "dovecot"
[[map]]
mta = "postfix"
path = "state/relay"
"""


def check(config: Path) -> tuple[int, str]:
    result = invoke(main, ["--config", str(config), "check"])
    return result.exit_code, result.output


def test_a_good_config_checks_ok_and_paths_are_read_beside_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD)
    (tmp_path / "mail.log").touch()
    assert check(config) == (
        0,
        f"{config}: OK (1 sources)\nwarning: {tmp_path / 'mail.log'}: {FORGEABLE_WARNING}\n",
    )
    loaded = load_config(config)
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.sources[0].path == tmp_path / "mail.log"
    assert loaded.timeout == timedelta(minutes=30)
    assert [str(network) for network in loaded.ignore] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('timeout = "30m"', 'timeout = "half an hour"'), "timeout: 'half an hour' is not a duration"),
        (('server = "dovecot"', 'server = "dovcot"'), "source[0].server: unknown rule 'dovcot'"),
        (('mta = "postfix"', 'mta = "smail"'), "map[0].mta: unknown MTA 'smail'"),
        (('path = "mail.log"', 'pth = "mail.log"'), "source[0].pth: unknown key"),
        (
            ('[[map]]\nmta = "postfix"', '[[map]]\nmta = "postfix"\ntype = "dbm"'),
            "map[0].type: unknown type 'dbm'",
        ),
        (('state_dir = "state"', 'state_dir = "state"\nignore = ["10.0.0.0/33"]'), "ignore: '10.0.0.0/33'"),
        (('state_dir = "state"', 'state_dir = "state"\nsourcez = 1'), "sourcez: unknown key"),
        (
            ("[[source]]", "[source]"),
            "source: expected one or more [[source]] tables",
        ),
    ],
)
def test_a_wrong_key_is_named(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    config = write_config(tmp_path, GOOD.replace(*change))
    code, output = check(config)
    assert code == 78
    assert output.startswith(f"exactcron: {config}: ")
    assert message in output
    assert output.count("\n") == 1


def test_timeout_missing_default_and_duration_forms() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("7d") == timedelta(days=7)
    for bad in ("0", "-5m", "5x", "", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD + "timeout = \n")
    code, output = check(config)
    assert code == 78
    assert "not valid TOML" in output and "line 9" in output


def test_missing_config_file(tmp_path: Path) -> None:
    code, output = check(tmp_path / "nowhere.toml")
    assert code == 78
    assert (
        output
        == f"exactcron: {tmp_path / 'nowhere.toml'}: no such configuration file (give --config or set EXACTCRON_CONFIG)\n"
    )


def test_a_world_writable_config_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD)
    config.chmod(0o666)
    code, output = check(config)
    assert code == 78
    assert "writable by every user" in output


def test_config_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    config = write_config(tmp_path, GOOD)
    (tmp_path / "mail.log").touch()
    result = invoke(main, ["check"], env={"EXACTCRON_CONFIG": str(config)})
    expected = f"{config}: OK (1 sources)\nwarning: {tmp_path / 'mail.log'}: {FORGEABLE_WARNING}\n"
    assert (result.exit_code, result.output) == (0, expected)


def test_an_unknown_timezone_is_named(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, GOOD.replace('server = "dovecot"', 'server = "dovecot"\ntimezone = "Mars/Olympus"')
    )
    code, output = check(config)
    assert code == 78
    assert "source[0].timezone: unknown time zone 'Mars/Olympus'" in output


# Around both of Berlin's clock changes in 2026, the year's first second, a stamp without offset.
STAMPS = ("Mar 29 01:30:00", "Mar 29 02:30:00", "Oct 25 02:30:00", "Jan  1 00:00:00", "2026-07-01T12:00:00")


def read_stamps(zone: object) -> list[str]:
    """STAMPS as read in `zone`."""
    parser = TimestampParser(parse_instant("2026-11-25T18:00:00+00:00"), zone)  # type: ignore[arg-type]
    # repr: also what == leaves out (fold).
    return [repr((parser.parse_prefix(text + " mx dovecot: x"), parser.ambiguity)) for text in STAMPS]


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Berlin"])
def test_a_timezone_reads_stamps_as_the_tz_database_has_it(tmp_path: Path, name: str) -> None:
    config = write_config(
        tmp_path, GOOD.replace('server = "dovecot"', f'server = "dovecot"\ntimezone = "{name}"')
    )
    assert read_stamps(load_config(config).sources[0].zone) == read_stamps(ZoneInfo(name))


def test_without_a_timezone_the_zone_is_tz_else_etc_localtime_else_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert read_stamps(system_zone()) == read_stamps(ZoneInfo("Europe/Berlin"))
    monkeypatch.setenv("TZ", "UTC")
    assert system_zone() is UTC
    monkeypatch.setenv("TZ", "Mars/Olympus")  # no such zone: /etc/localtime, as the C library does
    localtime = tmp_path / "localtime"
    monkeypatch.setattr(config_module, "LOCALTIME", localtime)
    for target in ["Europe/Berlin", "Etc/UTC", "UTC", "right/UTC"]:
        zone_file = Path("/usr/share/zoneinfo", target)
        localtime.unlink(missing_ok=True)
        localtime.symlink_to(zone_file)
        with zone_file.open("rb") as stream:
            assert read_stamps(system_zone()) == read_stamps(ZoneInfo.from_file(stream))
    localtime.unlink()
    assert system_zone() is UTC


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ('url = "mysql://db/mail"', "store.url: expected a libpq URI"),
        ('url = "postgresql://pop:hunter22@db/mail"', "store.url: holds a password; put it in ~/.pgpass"),
        ('url = "postgresql://pop@db/mail?password=hunter22"', "store.url: holds a password"),
        (
            'url = "postgresql://pop@db/mail"\nschema = "Drop Table"',
            "store.schema: expected a lower-case SQL name",
        ),
        ('url = "postgresql://pop@db/mail"\nhost = "db"', "store.host: unknown key"),
        ("", "store.url: missing (required)"),
    ],
)
def test_a_wrong_store_is_named_and_no_password_is_shown(tmp_path: Path, store: str, message: str) -> None:
    code, output = check(write_config(tmp_path, f"{GOOD}[store]\n{store}\n"))
    assert code == 78
    assert message in output
    assert "hunter22" not in output


def test_with_a_store_a_host_may_have_no_source_or_no_map(tmp_path: Path) -> None:
    store = '[store]\nurl = "postgresql://mta@db.example.net/mail"\n'
    loaded = load_config(write_config(tmp_path, f'state_dir = "state"\n{store}'))
    assert loaded.sources == () and loaded.maps == ()
    assert loaded.store is not None and loaded.store.schema == "exactcron"
    code, output = check(write_config(tmp_path, 'state_dir = "state"\n[[map]]\nmta = "exim"\npath = "r"\n'))
    assert code == 78 and "source: missing" in output
