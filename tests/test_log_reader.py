"""The log reader on real files: checkpoints, fingerprints, partial lines, bisection."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import threading
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from exactcron.errors import LogUnreadableError
from exactcron.sources.checkpoint import Checkpoint, FileMark
from exactcron.sources.logfile import BISECT_MIN_BYTES, LogReader
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

HOUR_BEFORE_NOW = NOW_TIME - timedelta(hours=1)  # the clock of these tests


def line(minutes_ago: float, text: str) -> bytes:
    stamp = (HOUR_BEFORE_NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="microseconds")
    return f"{stamp} mx dovecot: {text}\n".encode()


def read(path: Path, checkpoint: Checkpoint | None, **options: object) -> tuple[list[bytes], LogReader]:
    reader = LogReader(path, checkpoint, **options)  # type: ignore[arg-type]
    return list(reader.lines()), reader


def test_an_unterminated_last_line_waits_for_its_end(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(line(3, "one") + b"2026-11-25T16:58:00+00:00 mx dovecot: rip=10.0.0.1")
    first, reader = read(log, None)
    assert first == [line(3, "one").rstrip(b"\n")]
    with open(log, "ab") as stream:
        stream.write(b"2\n")
    second, _ = read(log, reader.checkpoint)
    # The whole line, never its first half: a cut line could carry a cut address.
    assert second == [b"2026-11-25T16:58:00+00:00 mx dovecot: rip=10.0.0.12"]


def test_a_carriage_return_does_not_start_a_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"a\rb\nc\n")
    lines, _ = read(log, None)
    assert lines == [b"a\rb", b"c"]


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)]
)
def test_a_compressed_rotation_is_finished_from_the_offset(
    tmp_path: Path, suffix: str, compress: object
) -> None:
    log = tmp_path / "mail.log"
    old = line(9, "old " + "x" * 2000) + line(8, "read")
    log.write_bytes(old)
    _, reader = read(log, None)
    tail = line(7, "unread")
    log.unlink()
    (tmp_path / f"mail.log.1{suffix}").write_bytes(compress(old + tail))  # type: ignore[operator]
    log.write_bytes(line(1, "new"))
    lines, after = read(log, reader.checkpoint)
    assert lines == [tail.rstrip(b"\n"), line(1, "new").rstrip(b"\n")]
    # Known and read to its end: the next run neither re-reads nor decompresses it.
    again, _ = read(log, after.checkpoint)
    assert again == []
    assert after.checkpoint is not None and any(mark.complete for mark in after.checkpoint.rotated)


def test_a_half_written_compressed_copy_beside_its_original_is_not_read_twice(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    content = line(9, "a" * 1500) + line(8, "b")
    log.write_bytes(content[:100])
    _, reader = read(log, None)
    log.rename(tmp_path / "mail.log.1")
    (tmp_path / "mail.log.1").write_bytes(content)
    # logrotate is still writing mail.log.1.gz: cut it short.
    (tmp_path / "mail.log.1.gz").write_bytes(gzip.compress(content)[:-40])
    log.write_bytes(b"")
    lines, _ = read(log, reader.checkpoint)
    assert lines == content.splitlines()


def test_an_unterminated_line_in_a_finished_file_is_dropped_with_a_warning(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(line(5, "a" * 1100))
    _, reader = read(log, None)
    (tmp_path / "mail.log.1.gz").write_bytes(gzip.compress(line(5, "a" * 1100) + b"cut rip=10.0.0.1"))
    log.unlink()
    lines, _ = read(log, reader.checkpoint)
    assert lines == []
    assert "unterminated last line" in " ".join(warnings_logged)


def test_first_run_on_a_large_log_bisects_to_the_timeout_window(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    filler = "postfix/smtpd[1]: connect from unknown[192.0.2.1] " + "y" * 150
    with open(log, "wb") as stream:
        count = 0
        while stream.tell() < 3 * BISECT_MIN_BYTES:
            # Ten days of lines, oldest first, then the last 30 minutes.
            stream.write(line(14400 - count * 0.25, filler))
            count += 1
        for minutes in range(30, 0, -1):
            stream.write(line(minutes, f"recent {minutes}"))
    size = log.stat().st_size
    timestamps = TimestampParser(HOUR_BEFORE_NOW, UTC)
    lines, reader = read(log, None, since=HOUR_BEFORE_NOW - timedelta(minutes=45), stamp_of=timestamps.stamp)
    recent = [entry for entry in lines if b" recent " in entry]
    assert len(recent) == 30
    assert reader.bytes_read < size // 10
    # Every line it did skip is older than the window.
    first_stamp = timestamps.stamp(lines[0])
    assert first_stamp is not None and first_stamp < HOUR_BEFORE_NOW - timedelta(minutes=45)


def test_a_stamp_it_cannot_read_is_never_skipped(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    with open(log, "wb") as stream:
        while stream.tell() < 2 * BISECT_MIN_BYTES:
            stream.write(b"no stamp here " + b"z" * 100 + b"\n")
    timestamps = TimestampParser(HOUR_BEFORE_NOW, UTC)
    _, reader = read(log, None, since=HOUR_BEFORE_NOW - timedelta(minutes=45), stamp_of=timestamps.stamp)
    assert reader.bytes_read == log.stat().st_size


def test_checkpoint_json_round_trip_and_tolerance() -> None:
    mark = FileMark("ab" * 32, 1024, 4096, 2049, 77)
    checkpoint = Checkpoint(mark, (FileMark("cd" * 32, 512, 512, 1, 2, True),))
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint
    assert Checkpoint.from_json({"format": 2, "live": None, "rotated": []}) == Checkpoint(None)
    # The first version's flat shape is read as the live file's mark.
    legacy = {
        "device": 2049,
        "inode": 77,
        "offset": 4096,
        "fingerprint": "ab" * 32,
        "fingerprint_length": 1024,
    }
    assert Checkpoint.from_json(legacy) == Checkpoint(mark)
    for broken in (
        None,
        [],
        "x",
        {},
        {"format": 3, "live": None},
        {"format": 2, "live": "x"},
        {"format": 2, "live": None, "rotated": [{"offset": 1}]},
        {"format": 2, "live": None, "rotated": "x"},
        {**legacy, "offset": -1},
        {**legacy, "fingerprint_length": 99999},
    ):
        assert Checkpoint.from_json(broken) is None


def test_unread_bytes_follows_the_fingerprint(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(line(3, "a"))
    _, reader = read(log, None)
    assert reader.unread_bytes() == 0
    with open(log, "ab") as stream:
        stream.write(line(2, "b"))
    assert reader.unread_bytes() == len(line(2, "b"))
    log.write_bytes(line(1, "other file"))
    assert reader.unread_bytes() == len(line(1, "other file"))
    log.unlink()
    assert reader.unread_bytes() is None


def test_a_line_longer_than_a_block_is_passed_over_with_a_warning(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    from exactcron.sources.logfile import CHUNK_BYTES

    log = tmp_path / "mail.log"
    long_line = b"x" * (3 * CHUNK_BYTES) + b"\n"
    log.write_bytes(line(3, "before") + long_line + line(2, "after"))
    lines, reader = read(log, None)
    assert lines == [line(3, "before").rstrip(b"\n"), line(2, "after").rstrip(b"\n")]
    assert reader.checkpoint is not None and reader.checkpoint.offset == log.stat().st_size
    assert f"skipped a line of {len(long_line)} bytes" in " ".join(warnings_logged)


def test_a_long_line_still_being_written_is_waited_for(tmp_path: Path) -> None:
    from exactcron.sources.logfile import CHUNK_BYTES

    log = tmp_path / "mail.log"
    log.write_bytes(line(3, "before") + b"x" * (2 * CHUNK_BYTES))
    lines, reader = read(log, None)
    assert lines == [line(3, "before").rstrip(b"\n")]
    with open(log, "ab") as stream:
        stream.write(b"\n" + line(1, "after"))
    later, _ = read(log, reader.checkpoint)
    assert later == [line(1, "after").rstrip(b"\n")]


def _within(seconds: float, action: Callable[[], object]) -> object:
    """What `action` returns or raises, or fail when it blocks (a FIFO opened for reading)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as error:  # handed to the test
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked"
    return outcome[0]


def test_a_fifo_at_the_log_path_is_refused_without_blocking(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    os.mkfifo(log)
    outcome = _within(10, lambda: read(log, None))
    assert isinstance(outcome, LogUnreadableError)
    assert (
        str(outcome)
        == f"cannot read log {log}: not a regular file (a FIFO); refusing it (a log is a regular file)"
    )
    assert _within(10, LogReader(log, None).unread_bytes) is None


def test_a_directory_at_the_log_path_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.mkdir()
    with pytest.raises(LogUnreadableError, match="Is a directory"):
        read(log, None)


@pytest.mark.parametrize("name", ["mail.log.1", "mail.log.2.gz", "mail.log.3.zst", "mail.log-20261124"])
def test_a_fifo_or_a_link_among_the_rotated_copies_is_never_read(
    tmp_path: Path, name: str, warnings_logged: list[str]
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(line(1, "live"))
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_bytes(line(2, "another file's line"))
    os.mkfifo(tmp_path / name)
    (tmp_path / "mail.log.9").symlink_to(elsewhere)
    (tmp_path / "mail.log.8").symlink_to(tmp_path / name)  # a link to the FIFO
    lines, reader = _within(10, lambda: read(log, None))  # type: ignore[misc]
    assert lines == [line(1, "live").rstrip(b"\n")]
    assert reader.checkpoint.rotated == ()
    said = "\n".join(warnings_logged)
    assert f"{tmp_path / name}: a FIFO, not read as a rotated copy" in said
    assert f"{tmp_path / 'mail.log.9'}: a symbolic link, not read as a rotated copy" in said
    # A refused log skipped to its end: the same.
    assert _within(10, LogReader(log, None).skip_to_end) == (len(line(1, "live")), 1, False)


def test_a_compressed_copy_is_decompressed_from_the_descriptor_checked(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(line(1, "live"))
    (tmp_path / "mail.log.2.gz").write_bytes(gzip.compress(line(9, "older")))
    newer = tmp_path / "mail.log.1.gz"
    newer.write_bytes(gzip.compress(line(5, "newer")))
    blocks = LogReader(log, None).blocks()
    first = next(blocks)  # the oldest copy's
    # Once found and checked, a copy's name is replaced by a FIFO: what is read is the file found.
    newer.unlink()
    os.mkfifo(newer)
    rest = _within(10, lambda: list(blocks))
    assert [block for block, _ in [first, *rest]] == [line(9, "older"), line(5, "newer"), line(1, "live")]
