"""One error type per exit code of the interface (sysexits.h numbers)."""

from __future__ import annotations


class ExactcronError(Exception):
    """An error the user can act on: one line of text and an exit code."""

    exit_code = 1


class ConfigError(ExactcronError):
    exit_code = 78  # EX_CONFIG


class LogUnreadableError(ExactcronError):
    exit_code = 66  # EX_NOINPUT


class MapBuildError(ExactcronError):
    exit_code = 69  # EX_UNAVAILABLE: postmap or makemap failed


class StateWriteError(ExactcronError):
    exit_code = 73  # EX_CANTCREAT

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        # The failed system call's errno, when one failed: ENOSPC and EDQUOT mean no room.
        self.errno = errno


class MapNoRoomError(StateWriteError):
    """A map that could not be rebuilt for lack of room; the message says what it holds now."""


class LockTimeoutError(ExactcronError):
    exit_code = 75  # EX_TEMPFAIL


class StoreUnavailableError(ExactcronError):
    exit_code = 75  # EX_TEMPFAIL: the shared lease store cannot be reached; try again later


class DeadlineReachedError(ExactcronError):
    exit_code = 75  # EX_TEMPFAIL: the run stopped reading at run_deadline; the next goes on


class NotOwnerError(ExactcronError):
    exit_code = 77  # EX_NOPERM: neither root nor the owner of state_dir
