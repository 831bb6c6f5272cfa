"""A follower looks at what a busy log gets before it steps (sources/peek.py).

Lines that hold no needle of the source's rules wake no step; every login
still is granted while the follower runs, wherever it falls in the burst:
in its middle, cut across two writes, as a two-line (popa3d) pair, or
around a copytruncate. Through the real CLI and postmap, as tests/test_follow.py;
LogPeek itself by property: it never says "no step" while a needle was written.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.commands.follow import SOURCES, Watch, source_needles
from exactcron.config import load_config
from exactcron.sources.checkpoint import Checkpoint, FileMark, digest
from exactcron.sources.peek import PEEK_MAX_BYTES, LogPeek
from exactcron.sources.watch import open_inotify
from tests.support.lines import dovecot_login
from tests.support.maps import map_keys
from tests.test_follow import Follow, finished, follow, wait_for, wait_started

__all__ = ["follow"]  # the fixture, shared with tests/test_follow.py

NEEDLES = frozenset({b"Login: ", b"Logged in: "})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def noise(index: int) -> str:
    return f"{now()} mail postfix/qmgr[812]: 4Q{index:08X}: removed\n"


def write(path: Path, text: str) -> None:
    """One write(2), as a syslog daemon writes a line."""
    with path.open("a") as stream:
        stream.write(text)


def burst(path: Path, lines: int, start: int = 0) -> None:
    for index in range(start, start + lines):
        write(path, noise(index))
        time.sleep(0.004)


# -- end to end ---------------------------------------------------------------


def test_a_burst_of_lines_without_a_login_wakes_no_step(follow: Follow) -> None:
    follower = follow.start("6s")
    wait_started(follow, follower)
    burst(follow.log, 500)
    assert finished(follower) == (0, "")
    # Its own run, and nothing after it: no line could grant.
    assert follow.follower_status()["steps"] == 1


def test_a_login_in_the_middle_of_a_burst_is_granted_while_it_runs(follow: Follow) -> None:
    follower = follow.start("10s")
    wait_started(follow, follower)
    burst(follow.log, 200)
    follow.login("192.0.2.80")
    burst(follow.log, 200, 200)
    wait_for(lambda: follow.granted("192.0.2.80"), follower)
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == {"192.0.2.80"}
    # Few steps: the burst around the login woke none of its own.
    assert follow.follower_status()["steps"] <= 3


def test_a_login_cut_across_two_writes_is_granted_while_it_runs(follow: Follow) -> None:
    follower = follow.start("10s")
    wait_started(follow, follower)
    line = dovecot_login("192.0.2.81", "alice", now()) + "\n"
    cut = line.index("Login: ") + 3  # `Log` in one write, `in: ` in the next
    write(follow.log, noise(1) + line[:cut])
    time.sleep(0.5)  # looked at in between
    write(follow.log, line[cut:] + noise(2))
    wait_for(lambda: follow.granted("192.0.2.81"), follower)
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == {"192.0.2.81"}


def test_a_two_line_login_is_granted_while_it_runs(follow: Follow) -> None:
    text = follow.config.read_text().replace('server = "dovecot"', 'server = ["dovecot", "popa3d"]')
    follow.config.write_text(text)
    follower = follow.start("10s")
    wait_started(follow, follower)
    burst(follow.log, 100)
    write(follow.log, f"{now()} mail popa3d[4711]: Session from 192.0.2.82\n")
    burst(follow.log, 100, 100)
    write(follow.log, f"{now()} mail popa3d[4711]: Authentication passed for pcap\n")
    burst(follow.log, 100, 200)
    wait_for(lambda: follow.granted("192.0.2.82"), follower)
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == {"192.0.2.82"}


def test_a_copytruncate_during_a_burst_loses_nothing(follow: Follow) -> None:
    follow.login("192.0.2.83")
    follower = follow.start("12s")
    wait_started(follow, follower)
    burst(follow.log, 100)
    follow.login("192.0.2.84")
    burst(follow.log, 50, 100)
    rotated = follow.log.with_name("mail.log.1")
    rotated.write_bytes(follow.log.read_bytes())
    with follow.log.open("r+") as stream:
        stream.truncate(0)
    # The new file grows past where the old one was read to before a login comes.
    burst(follow.log, 300, 150)
    follow.login("192.0.2.85")
    burst(follow.log, 50, 450)
    expected = {"192.0.2.83", "192.0.2.84", "192.0.2.85"}
    for address in sorted(expected):
        wait_for(lambda address=address: follow.granted(address), follower)  # type: ignore[misc]
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == expected


# -- LogPeek ------------------------------------------------------------------


def peek_from(path: Path, needles: frozenset[bytes] = NEEDLES) -> LogPeek:
    """A peek restarted where a step that read all of `path` would leave it."""
    content = path.read_bytes()
    status = os.stat(path)
    head = content[:1024]
    mark = FileMark(digest(head), len(head), len(content), status.st_dev, status.st_ino)
    peek = LogPeek(path, needles)
    peek.restart(Checkpoint(mark).to_json())
    return peek


chunks = st.lists(st.binary(max_size=40).map(lambda data: data.replace(b"L", b"l")), max_size=12)


@settings(max_examples=150, deadline=None)
@given(before=chunks, after=chunks, needle=st.sampled_from(sorted(NEEDLES)), data=st.data())
def test_a_needle_written_in_any_pieces_is_seen_once_whole(
    before: list[bytes], after: list[bytes], needle: bytes, data: st.DataObject
) -> None:
    # Noise (no `L`, so no needle) around one needle cut anywhere, each piece
    # written and looked at apart: the look after its last piece says to step.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mail.log"
        path.write_bytes(b"2026 mail dovecot: start\n")
        peek = peek_from(path)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(needle)), max_size=3)))
        bounds = zip([0, *cuts], [*cuts, len(needle)], strict=True)
        pieces = [needle[start:end] for start, end in bounds if end > start]
        for piece in [*before, *pieces[:-1]]:
            append_bytes(path, piece)
            assert not peek.may_hold_login()
        append_bytes(path, pieces[-1])
        assert peek.may_hold_login()
        peek = peek_from(path)  # as after the step
        for piece in after:
            append_bytes(path, piece)
            assert not peek.may_hold_login()


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as stream:
        stream.write(data)


def test_noise_is_not_a_step_and_what_cannot_be_told_is(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"2026 mail postfix: old\n" * 100)
    peek = peek_from(log)
    assert not peek.may_hold_login()  # nothing new
    write(log, noise(1))
    assert not peek.may_hold_login()
    # A burst too large to look at steps.
    write(log, noise(2) * (PEEK_MAX_BYTES // 40))
    assert peek.may_hold_login()
    # Truncated, then grown past where it was read: its first bytes changed.
    peek = peek_from(log)
    log.write_bytes(b"2026 mail postfix: new\n" * 200)
    assert peek.may_hold_login()
    # Replaced by another file, or gone.
    peek = peek_from(log)
    log.rename(tmp_path / "mail.log.1")
    assert peek.may_hold_login()
    log.write_bytes(b"")
    assert peek.may_hold_login()
    # A rule that reads every line (no literal): every write may grant.
    peek = peek_from(log, frozenset({b""}))
    write(log, noise(3))
    assert peek.may_hold_login()
    # Nothing known of where the last step left it.
    unknown = LogPeek(log, NEEDLES)
    assert unknown.may_hold_login()


# -- what wakes a step (follow.Watch with its peeks) --------------------------


def test_only_a_write_holding_a_needle_or_another_change_wakes_a_step(follow: Follow) -> None:
    write(follow.log, noise(0))
    assert follow.run("update").returncode == 0  # its checkpoint: where the peek starts
    watch = Watch(load_config(follow.config), open_inotify())
    try:
        watch.arm()
        watch.restart_peeks()
        write(follow.log, noise(1))
        assert SOURCES not in woken_within(watch, 1.0)
        follow.login("192.0.2.90")
        assert SOURCES in woken_within(watch, 5.0)
        # Not a write: the owner's or mode's change is for the step to judge (written_by).
        os.chmod(follow.log, 0o600)
        assert SOURCES in woken_within(watch, 5.0)
        # A write to the log renamed away (the writer has not reopened yet).
        rotated = follow.log.with_name("mail.log.1")
        follow.log.rename(rotated)
        assert SOURCES in woken_within(watch, 5.0)
        write(rotated, noise(2))
        assert SOURCES in woken_within(watch, 5.0)
    finally:
        watch.close()


def woken_within(watch: Watch, patience: float) -> set[str]:
    ends = time.monotonic() + patience
    seen: set[str] = set()
    while time.monotonic() < ends and SOURCES not in seen:
        seen |= watch.wait(ends - time.monotonic())
    return seen


def test_the_needles_looked_for_are_those_the_step_reads_lines_for(tmp_path: Path) -> None:
    follow = Follow(tmp_path)
    text = follow.config.read_text().replace(
        'server = "dovecot"', 'server = ["dovecot", "popa3d"]\nhold_while_connected = true'
    )
    follow.config.write_text(text)
    needles = source_needles(load_config(follow.config).sources[0])
    # The login lines, the two-line rule's connect and success lines, a held session's end.
    assert {b"Login: ", b"Session from ", b"Authentication ", b"Disconnected"} <= needles
