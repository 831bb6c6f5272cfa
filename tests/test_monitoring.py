"""What a monitoring system sees: `status` health, the metrics file, warnings about missing logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.lines import dovecot_login
from tests.support.site import Site


def test_status_is_healthy_after_an_update_and_stale_after_stale_after(site: Site) -> None:
    site.run("update")
    fresh = site.run("status", now="2026-11-25T18:05:00+00:00")
    assert fresh.exit_code == 0
    assert fresh.output.endswith("leases: 0\nhealthy\n")
    stale = site.run("status", now="2026-11-25T18:05:01+00:00")
    assert stale.exit_code == 1
    assert stale.output.endswith(
        "unhealthy\nexactcron: unhealthy: no update succeeded for 5m01s (since 2026-11-25T18:00:00+00:00; "
        "stale_after is 5m): is the cron job or timer running?\n"
    )


def test_stale_after_is_configurable(make_site: Callable[..., Site]) -> None:
    site = make_site(extra='stale_after = "1h"')
    site.run("update")
    assert site.run("status", now="2026-11-25T18:59:00+00:00").exit_code == 0
    assert site.run("status", now="2026-11-25T19:00:01+00:00").exit_code == 1


def test_status_is_unhealthy_after_a_failed_update_and_healthy_again_after_a_good_one(site: Site) -> None:
    site.run("update")
    site.log.unlink()
    site.log.mkdir()  # unreadable as a file, also to root
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 66
    failed = site.run("status", "--json", now="2026-11-25T18:01:30+00:00")
    assert failed.exit_code == 1
    document = json.loads(failed.output[: failed.output.rindex("}") + 1])
    message = f"cannot read log {site.log}: Is a directory"
    assert (document["healthy"], document["last_success"], document["last_error"]) == (
        False,
        "2026-11-25T18:00:00+00:00",
        message,
    )
    assert document["last_run"] == {"time": "2026-11-25T18:01:00+00:00", "outcome": f"failed: {message}"}
    assert failed.output.endswith(
        f"exactcron: unhealthy: the last update, at 2026-11-25T18:01:00+00:00, failed: {message}\n"
    )
    site.log.rmdir()
    site.log.touch()
    assert site.run("update", now="2026-11-25T18:02:00+00:00").exit_code == 0
    healthy = site.run("status", "--json", now="2026-11-25T18:02:00+00:00")
    assert healthy.exit_code == 0
    document = json.loads(healthy.output)
    assert (document["healthy"], document["last_success"], document["last_error"]) == (
        True,
        "2026-11-25T18:02:00+00:00",
        None,
    )


def test_update_warns_when_a_log_never_existed(site: Site) -> None:
    site.log.unlink()
    result = site.run("update")
    assert result.exit_code == 0
    assert result.output == (
        f"exactcron: WARNING: log {site.log} does not exist and never has: check the path, and that "
        "the syslog daemon (rsyslog) writes it; no login is read until it does\n"
    )


def test_update_warns_when_a_log_is_gone_for_longer_than_a_rotation(site: Site) -> None:
    site.run("update")
    site.log.unlink()
    # Being rotated: a minute without the file says nothing yet.
    assert site.run("update", now="2026-11-25T18:01:00+00:00").output == ""
    assert site.run("update", now="2026-11-25T18:02:00+00:00").output == ""
    assert site.run("update", now="2026-11-25T18:03:00+00:00").output == (
        f"exactcron: WARNING: log {site.log} has been missing since 2026-11-25T18:00:00+00:00, longer "
        "than a rotation takes: no login is read until it is back\n"
    )
    site.log.touch()
    assert site.run("update", now="2026-11-25T18:04:00+00:00").output == ""


def test_the_missing_log_warning_also_goes_to_the_log_file(make_site: Callable[..., Site]) -> None:
    site = make_site(extra='log_file = "exactcron.log"')
    site.log.unlink()
    site.run("update")
    assert "WARNING: log " in (site.root / "exactcron.log").read_text()


def metrics_site(make_site: Callable[..., Site], tmp_path: Path) -> tuple[Site, Path]:
    target = tmp_path / "textfile" / "exactcron.prom"
    target.parent.mkdir()
    return make_site(extra=f'metrics_file = "{target}"'), target


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, read with prometheus_client's exposition parser."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_file_after_updates_quiet_ones_included(
    make_site: Callable[..., Site], tmp_path: Path
) -> None:
    site, target = metrics_site(make_site, tmp_path)
    site.write_log(dovecot_login("192.0.2.10"), dovecot_login("192.0.2.11", "bob"))
    site.run("update")
    first = samples(target)
    source = (("source", str(site.log)),)
    assert first.pop(("exactcron_run_duration_seconds", ())) >= 0
    assert first == {
        ("exactcron_leases", ()): 2,
        ("exactcron_last_run_success", ()): 1,
        ("exactcron_last_success_timestamp_seconds", ()): 1795629600.0,
        ("exactcron_logins_total", source): 2,
        ("exactcron_unread_bytes", source): 0,
        ("exactcron_unreadable_lines_total", source): 0,
        ("exactcron_refused_total", (("reason", "max-addresses"),)): 0,
        ("exactcron_refused_total", (("reason", "shared"),)): 0,
        # Both logins at 17:50:13.486319 (the line's own stamp), installed at --now, 18:00:00.
        ("exactcron_grant_delay_seconds", (("quantile", "0.5"),)): 586.513681,
        ("exactcron_grant_delay_seconds", (("quantile", "0.99"),)): 586.513681,
        ("exactcron_grant_delay_seconds_count", ()): 2,
        ("exactcron_grant_delay_seconds_sum", ()): 1173.027362,
    }
    site.write_log(dovecot_login("192.0.2.12", time="2026-11-25T18:00:30+00:00"))
    with site.log.open("a") as stream:
        stream.write("Nov 25 18:00:31 mx1 dovecot: unterminated")  # held back, unread
    site.run("update", now="2026-11-25T18:01:00+00:00")
    site.run("update", now="2026-11-25T18:02:00+00:00")  # quiet: nothing new
    later = samples(target)
    assert later[("exactcron_logins_total", source)] == 3
    assert later[("exactcron_unread_bytes", source)] == len("Nov 25 18:00:31 mx1 dovecot: unterminated")
    assert later[("exactcron_last_success_timestamp_seconds", ())] == 1795629720.0
    assert later[("exactcron_leases", ())] == 3
    assert later[("exactcron_grant_delay_seconds_count", ())] == 3
    assert later[("exactcron_grant_delay_seconds_sum", ())] == pytest.approx(1173.027362 + 30)
    assert sorted(path.name for path in target.parent.iterdir()) == ["exactcron.prom"]


def test_grant_delay_counts_each_lease_granted_or_extended_from_its_login_to_its_map(
    make_site: Callable[..., Site], tmp_path: Path
) -> None:
    site, target = metrics_site(make_site, tmp_path)
    # Installed at --now, 18:01:00: delays of 60, 30, 10, 2 and 1 seconds.
    site.write_log(
        *(
            dovecot_login(f"192.0.2.{index}", time=f"2026-11-25T18:00:{second:02d}+00:00")
            for index, second in enumerate((0, 30, 50, 58, 59), start=1)
        )
    )
    site.run("update", now="2026-11-25T18:01:00+00:00")
    found = samples(target)
    assert found[("exactcron_grant_delay_seconds_count", ())] == 5
    assert found[("exactcron_grant_delay_seconds_sum", ())] == 103
    assert found[("exactcron_grant_delay_seconds", (("quantile", "0.5"),))] == 10
    assert found[("exactcron_grant_delay_seconds", (("quantile", "0.99"),))] == 60
    # An extension counts; a login older than its lease's (it extends nothing) does not.
    site.write_log(
        dovecot_login("192.0.2.1", time="2026-11-25T18:01:30+00:00"),
        dovecot_login("192.0.2.2", time="2026-11-25T17:59:00+00:00"),
    )
    site.run("update", now="2026-11-25T18:02:00+00:00")
    found = samples(target)
    assert found[("exactcron_grant_delay_seconds_count", ())] == 6
    assert found[("exactcron_grant_delay_seconds_sum", ())] == 133
    # A quiet run changes nothing.
    site.run("update", now="2026-11-25T18:03:00+00:00")
    assert samples(target)[("exactcron_grant_delay_seconds_count", ())] == 6


def test_grant_delay_is_measured_to_the_microsecond_from_the_logins_own_stamp(
    make_site: Callable[..., Site], tmp_path: Path
) -> None:
    # The lease keeps 18:00:59 (its second); the delay is from the line's 18:00:59.250001.
    site, target = metrics_site(make_site, tmp_path)
    site.write_log(
        dovecot_login("192.0.2.1", time="2026-11-25T18:00:59.250001+00:00"),
        # Two logins of one address: its latest counts, once.
        dovecot_login("192.0.2.2", time="2026-11-25T18:00:58.5+00:00"),
        dovecot_login("192.0.2.2", time="2026-11-25T18:00:59.999+00:00"),
    )
    site.run("update", now="2026-11-25T18:01:00+00:00")
    found = samples(target)
    assert found[("exactcron_grant_delay_seconds_count", ())] == 2
    assert found[("exactcron_grant_delay_seconds_sum", ())] == pytest.approx(0.749999 + 0.001, abs=1e-9)
    assert found[("exactcron_grant_delay_seconds", (("quantile", "0.5"),))] == pytest.approx(0.001, abs=1e-9)
    assert found[("exactcron_grant_delay_seconds", (("quantile", "0.99"),))] == pytest.approx(
        0.749999, abs=1e-9
    )
    recorded = json.loads((site.state / "last-run.json").read_text())
    assert sorted(recorded["recent_grant_delays"]) == [0.001, 0.749999]


def test_metrics_file_after_a_failed_update(make_site: Callable[..., Site], tmp_path: Path) -> None:
    site, target = metrics_site(make_site, tmp_path)
    site.run("update")
    site.log.unlink()
    site.log.mkdir()
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 66
    found = samples(target)
    assert found[("exactcron_last_run_success", ())] == 0
    assert found[("exactcron_last_success_timestamp_seconds", ())] == 1795629600.0


def test_a_metrics_file_that_cannot_be_written_does_not_stop_relay_control(
    make_site: Callable[..., Site], tmp_path: Path
) -> None:
    site = make_site(extra=f'metrics_file = "{tmp_path / "missing" / "exactcron.prom"}"')
    site.write_log(dovecot_login("192.0.2.10"))
    result = site.run("update")
    assert result.exit_code == 0
    assert "cannot write metrics_file" in result.output
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_a_last_run_record_of_0_1_0_still_says_how_the_last_run_went(site: Site) -> None:
    site.state.mkdir()
    record = site.state / "last-run.json"
    record.write_text('{"outcome": "ok", "schema": 1, "time": "2026-11-25T17:59:00+00:00"}\n')
    assert site.run("status").exit_code == 0
    record.write_text(
        '{"outcome": "failed: cannot read log x", "schema": 1, "time": "2026-11-25T17:59:00+00:00"}\n'
    )
    failed = site.run("status", "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.output[: failed.output.rindex("}") + 1])["last_error"] == "cannot read log x"


def test_the_metrics_come_from_what_the_run_holds(
    make_site: Callable[..., Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoints read once a run, and a quiet run opens no log: the
    metrics file still says what is unread."""
    from exactcron.sources.logfile import LogReader
    from exactcron.stores.local import LocalState

    site, target = metrics_site(make_site, tmp_path)
    calls: list[str] = []
    for owner, name in ((LogReader, "__init__"), (LocalState, "load_checkpoints")):
        original = getattr(owner, name)

        def counted(*args: Any, original: Any = original, name: str = name, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    site.write_log(dovecot_login("192.0.2.10"))
    with site.log.open("a") as stream:
        stream.write("Nov 25 17:59:31 mail dovecot: unterminated")
    assert site.run("update").exit_code == 0
    assert calls.count("load_checkpoints") == 1
    calls.clear()
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0  # quiet
    assert calls == ["load_checkpoints"]
    unread = len("Nov 25 17:59:31 mail dovecot: unterminated")
    assert samples(target)[("exactcron_unread_bytes", (("source", str(site.log)),))] == unread
