"""Corrupt or foreign state files: set aside under a clear name, a warning, and a rebuild from the log."""

from __future__ import annotations

import pytest

from tests.support.lines import dovecot_login
from tests.support.site import Site

DAMAGE = {
    "garbage": b"\x00\xff\xfe binary garbage \x89PNG",
    "truncated": b'{"schema": 1, "leases": [{"ip": "192.0.2.10", "user": "al',
    "empty": b"",
    "future schema": b'{"schema": 7, "leases": [], "sources": {}}',
    "a list": b"[1, 2, 3]",
    "wrong types": b'{"schema": 1, "leases": [{"ip": 5, "user": [], "last_login": 1, "expires": null}], "sources": 3}',
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", ["leases.json", "checkpoints.json"])
def test_a_damaged_state_file_is_set_aside_and_the_leases_rebuilt(site: Site, name: str, damage: str) -> None:
    site.write_log(dovecot_login("192.0.2.10"), dovecot_login("2001:db8::5", "bob"))
    assert site.run("update").exit_code == 0
    (site.state / name).write_bytes(DAMAGE[damage])
    site.write_log(dovecot_login("192.0.2.11", "carol", "2026-11-25T17:59:00+00:00"))

    result = site.run("update", now="2026-11-25T18:01:00+00:00")

    assert result.exit_code == 0
    (warning,) = result.output.splitlines()
    assert warning.startswith(f"exactcron: WARNING: {site.state / name} is ")
    assert f"moved it to {name}.corrupt-" in warning
    (aside,) = site.state.glob(f"{name}.corrupt-*")
    assert aside.read_bytes() == DAMAGE[damage]
    assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n2001:db8::5 OK\n"
    # The next run is quiet again.
    assert site.run("update", now="2026-11-25T18:02:00+00:00").output == ""
