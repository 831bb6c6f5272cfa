"""Rotated logs as logrotate compresses them: gzip, bzip2, xz and zstd.

gzip, bzip2 and xz are read with the standard library, imported only when
such a file is read. Python has no zstd module before 3.14 and Debian ships
none with its python3: a .zst file is read through the `zstd` command
(Debian package zstd, which logrotate's `compresscmd zstd` needs anyway).
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import subprocess

SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

# Suffix -> module whose `open` reads it.
_MODULES = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
# Output skipped per read while seeking forward in a zstd stream.
_SKIP_BYTES = 1 << 20


class ToolMissingError(OSError):
    """The command that decompresses a file is not installed."""


def is_compressed(path: Path) -> bool:
    return path.suffix in SUFFIXES


def open_log(path: Path, opened: IO[bytes] | None = None) -> IO[bytes]:
    """`path` opened for reading its (decompressed) bytes; from `opened`, when
    given, which holds the raw bytes of the file named `path`."""
    if path.suffix == ".zst":
        return cast(IO[bytes], io.BufferedReader(_ZstdStream(path, opened), buffer_size=1 << 16))
    module = _MODULES.get(path.suffix)
    if module is None:
        return opened if opened is not None else open(path, "rb")
    opener: Callable[..., IO[bytes]] = importlib.import_module(module).open
    return opener(opened if opened is not None else path, "rb")


def errors() -> tuple[type[BaseException], ...]:
    """Errors a broken or half-written compressed file raises while being read.

    A decompressor's own error can only come from a module already imported.
    """
    found: list[type[BaseException]] = [OSError, EOFError, ValueError]
    for module, name in (("lzma", "LZMAError"), ("zlib", "error")):
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


class _ZstdStream(io.RawIOBase):
    """The output of `zstd -dc FILE`: read forward, seekable forward only."""

    def __init__(self, path: Path, opened: IO[bytes] | None = None) -> None:
        super().__init__()
        # Imported here: most runs read no .zst file, and never pay for it.
        import subprocess

        self._path = path
        self._process: subprocess.Popen[bytes]
        try:
            self._process = subprocess.Popen(
                ["zstd", "-d", "-c", "-q", "--no-progress", *(["--", str(path)] if opened is None else [])],
                stdin=subprocess.DEVNULL if opened is None else opened,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise ToolMissingError(
                f"{path}: cannot read a .zst file: the zstd command is not installed"
            ) from None
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Popen's pipes are buffered readers (bufsize -1).
        stdout = cast(io.BufferedReader, self._process.stdout)
        count: int = stdout.readinto(buffer)
        if not count:
            self._finish()
            return 0
        self._position += count
        return count

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._position:
            raise io.UnsupportedOperation("a zstd stream only seeks forward")
        scratch = bytearray(_SKIP_BYTES)
        while self._position < target:
            view = memoryview(scratch)[: min(_SKIP_BYTES, target - self._position)]
            if not self.readinto(view):
                break
        return self._position

    def _finish(self) -> None:
        assert self._process.stderr is not None
        message = self._process.stderr.read().decode("utf-8", "replace").strip()
        if self._process.wait() != 0:
            # A damaged or cut file: the lines before the damage were read.
            raise OSError(f"zstd: {message or 'exit status ' + str(self._process.returncode)}")

    def close(self) -> None:
        if not self.closed and self._process.poll() is None:
            self._process.kill()
        if not self.closed:
            self._process.wait()
            for pipe in (self._process.stdout, self._process.stderr):
                if pipe is not None:
                    pipe.close()
        super().close()
