"""The checkpoint of a log file: how far each file (the live log and its recent
rotated copies, known by the fingerprint of their first bytes) has been read,
and what is known of the log having been open to forgers (`written_by`).

The format is versioned (CHECKPOINT_FORMAT); anything this version did not
write reads as None, never as a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from exactcron.records import dataclass

FINGERPRINT_BYTES = 1024
# The newest rotated siblings examined (and remembered) per run.
MAX_ROTATED_CANDIDATES = 16
CHECKPOINT_FORMAT = 2
# The "trusted from" marks kept per source: those of the last skip and older
# ones of files not seen then, newest first.
MAX_TRUSTED_FROM = 4 * MAX_ROTATED_CANDIDATES


@dataclass(frozen=True)
class FileMark:
    """How far one file (known by the fingerprint of its first bytes) has been read."""

    fingerprint: str
    fingerprint_length: int
    offset: int
    device: int = 0
    inode: int = 0
    # A compressed file read to its end (or skipped as too old): it never
    # changes again, so it is not decompressed again.
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "fingerprint_length": self.fingerprint_length,
            "offset": self.offset,
            "device": self.device,
            "inode": self.inode,
            "complete": self.complete,
        }

    @classmethod
    def from_json(cls, document: object) -> FileMark | None:
        if not isinstance(document, dict):
            return None
        try:
            mark = cls(
                str(document["fingerprint"]),
                int(document["fingerprint_length"]),
                int(document["offset"]),
                int(document.get("device", 0)),
                int(document.get("inode", 0)),
                document.get("complete", False) is True,
            )
        except (KeyError, TypeError, ValueError):
            return None
        if mark.offset < 0 or not 0 <= mark.fingerprint_length <= FINGERPRINT_BYTES:
            return None
        return mark

    def matches(self, head: bytes) -> bool:
        # A mark taken of an empty file identifies nothing; its offset is 0,
        # so treating the file as unseen reads the same bytes.
        if self.fingerprint_length == 0 or len(head) < self.fingerprint_length:
            return False
        return digest(head[: self.fingerprint_length]) == self.fingerprint


@dataclass(frozen=True)
class Checkpoint:
    """Where reading of one log stopped: the live file and its recent rotated siblings."""

    live: FileMark | None
    rotated: tuple[FileMark, ...] = ()
    # Refused by `written_by` (others could write the log): what is written
    # until a run finds it trusted again is skipped unread (LogReader.skip_to_end).
    refused: bool = False
    # Where each file skipped that way becomes trusted: no byte before these
    # marks is ever read, not by a rebuild nor a first run (LogReader's `floor`).
    trusted_from: tuple[FileMark, ...] = ()

    # What `status` shows: the live file's identity and offset.
    @property
    def device(self) -> int:
        return self.live.device if self.live else 0

    @property
    def inode(self) -> int:
        return self.live.inode if self.live else 0

    @property
    def offset(self) -> int:
        return self.live.offset if self.live else 0

    def describe(self) -> str:
        return f"device {self.device}, inode {self.inode}, offset {self.offset}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            # The live file's identity and offset at the top, as `status --json` has always shown them.
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "live": self.live.to_json() if self.live else None,
            "rotated": [mark.to_json() for mark in self.rotated],
            **({"refused": True} if self.refused else {}),
            **({"trusted_from": [mark.to_json() for mark in self.trusted_from]} if self.trusted_from else {}),
        }

    @classmethod
    def from_json(cls, document: object) -> Checkpoint | None:
        """A checkpoint, or None for anything this version did not write."""
        if not isinstance(document, dict):
            return None
        if "format" not in document:
            # Format 1 was one flat mark for the live file.
            mark = FileMark.from_json(document)
            return cls(mark) if mark is not None else None
        if document.get("format") != CHECKPOINT_FORMAT:
            return None
        raw_live = document.get("live")
        live = None if raw_live is None else FileMark.from_json(raw_live)
        raw_rotated = document.get("rotated", [])
        if (raw_live is not None and live is None) or not isinstance(raw_rotated, list):
            return None
        rotated = [FileMark.from_json(item) for item in raw_rotated]
        trusted_from = _marks_from_json(document.get("trusted_from", []))
        if any(mark is None for mark in rotated) or trusted_from is None:
            return None
        return cls(
            live,
            tuple(mark for mark in rotated if mark is not None),
            document.get("refused") is True,
            trusted_from,
        )

    def marks(self) -> list[FileMark]:
        return ([self.live] if self.live else []) + list(self.rotated)


@dataclass(frozen=True)
class Untrusted:
    """What is known of a source's log having been open to forgers (`written_by` refused it).

    Kept twice, in its checkpoint and in a file of its own (state.TRUST_FILE),
    and the two read as their union: losing either file (broken, set aside)
    loses neither the refusal nor where the log is trusted from again.
    """

    refused: bool = False
    trusted_from: tuple[FileMark, ...] = ()

    def __bool__(self) -> bool:
        return self.refused or bool(self.trusted_from)

    def union(self, other: Untrusted) -> Untrusted:
        return Untrusted(
            self.refused or other.refused, merge_trusted_from(self.trusted_from, other.trusted_from)
        )

    def to_json(self) -> dict[str, Any]:
        return {"refused": self.refused, "trusted_from": [mark.to_json() for mark in self.trusted_from]}

    @classmethod
    def from_json(cls, document: object) -> Untrusted | None:
        """None for anything this version did not write."""
        if not isinstance(document, dict):
            return None
        marks = _marks_from_json(document.get("trusted_from", []))
        if marks is None:
            return None
        return cls(document.get("refused") is True, marks)

    @classmethod
    def of(cls, checkpoint: Checkpoint | None) -> Untrusted:
        if checkpoint is None:
            return cls()
        return cls(checkpoint.refused, checkpoint.trusted_from)


def merge_trusted_from(*groups: Iterable[FileMark]) -> tuple[FileMark, ...]:
    """The marks of every group, one per file (the later of two: the safer), first groups first.

    A mark of an empty file identifies nothing (and nothing was skipped in it): dropped.
    """
    merged: dict[tuple[str, int], FileMark] = {}
    for group in groups:
        for mark in group:
            if mark.fingerprint_length == 0:
                continue
            key = (mark.fingerprint, mark.fingerprint_length)
            known = merged.get(key)
            if known is None or (not known.complete and (mark.complete or mark.offset > known.offset)):
                merged[key] = mark
    return tuple(merged.values())[:MAX_TRUSTED_FROM]


def _marks_from_json(document: object) -> tuple[FileMark, ...] | None:
    if not isinstance(document, list):
        return None
    marks = [FileMark.from_json(item) for item in document]
    if any(mark is None for mark in marks):
        return None
    return tuple(mark for mark in marks if mark is not None)


def digest(data: bytes) -> str:
    import hashlib  # not needed by a run that finds nothing new

    return hashlib.sha256(data).hexdigest()
