"""Large output files written with early write-back ("write-behind"): every ``CHUNK`` bytes, the chunk just written
is handed to the disk (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait) and the chunk before it,
written to disk by then, is waited for and dropped from the page cache (``posix_fadvise(POSIX_FADV_DONTNEED)``).

Why: an export writes gigabytes that the build never reads again (WebDataset shards embed every sample's image,
five times the image folder's bytes). Through the page cache, each of those bytes takes a page the kernel must
find, and the pages stay dirty until the kernel writes them back. Measured on the 2-core VM this project runs on,
writing 800 MB through the page cache cost 2.4-2.7 s of system time (fresh pages are expensive there: about
12 us per 4 KiB page the first time a page is touched); written behind, the same file took 0.35-0.42 s (about
2 GB/s, the disk's speed) and 0.3 s of system time, because the same few megabytes of page cache are reused. On a
machine where the disk is slower than the page cache, the write then proceeds at the disk's speed, which a
long build reaches anyway once the dirty pages exceed the kernel's limits. Set ``MEDVL_WRITE_BEHIND=0`` to
write through the page cache as before. The bytes written are the same either way.

Linux only (``sync_file_range`` from the C library through ctypes); elsewhere, or on a file system that refuses
the call (it is a no-op on tmpfs, which is fine), files are written normally."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

CHUNK = 8 << 20  # bytes handed to the disk at a time
BUFFER = 1 << 20  # gathered small writes are written once they reach this
SMALL = 64 << 10  # writes smaller than this are gathered (tar headers and padding are 512 bytes); larger ones are
# written from where they are
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # SYNC_FILE_RANGE_* flags


@lru_cache(maxsize=1)
def _sync_file_range() -> Callable[..., int] | None:
    """libc's ``sync_file_range``, or None where there is none (not Linux, or no C library to load)."""
    if not hasattr(os, "posix_fadvise") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def enabled() -> bool:
    """Whether files are written behind (``MEDVL_WRITE_BEHIND=0`` turns it off; it needs Linux)."""
    return os.environ.get("MEDVL_WRITE_BEHIND", "1").strip().lower() not in ("0", "false", "no", "off") \
        and _sync_file_range() is not None


class WriteBehindFile:
    """A binary file opened for writing (created or truncated, like ``open(path, "wb")``) whose written chunks are
    handed to the disk and dropped from the page cache as it grows (see the module docstring). ``write`` and
    ``close`` only; usable as a context manager and as the file object of ``pyarrow.parquet.ParquetWriter``. With
    ``sha256=True`` it hashes what is written (:meth:`hexdigest`), so the manifest need not read the file back
    (from disk: its pages were dropped)."""

    def __init__(self, path: str | Path, chunk: int = CHUNK, *, sha256: bool = False) -> None:
        self.path = str(path)
        # the file's SHA-256, computed as it is written (its pages are dropped: reading it back would go to disk)
        self._sha = hashlib.sha256() if sha256 else None
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                                      0o666)
        self.chunk = chunk
        self._buf = bytearray()
        self._written = 0  # bytes handed to the kernel
        self._queued = 0  # bytes whose write-back was started
        self._sfr = _sync_file_range() if enabled() else None

    # -- file protocol -------------------------------------------------------------------------------------------
    def write(self, data: Any) -> int:
        if self.fd is None:
            raise ValueError(f"write to closed file {self.path}")
        n = len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes
        if self._sha is not None:
            self._sha.update(data)
        if n < SMALL:  # gathered (tar headers, padding, JSON)
            self._buf += data
            if len(self._buf) >= BUFFER:
                self._flush_buffer()
        else:  # written from where it is, after what is gathered, in one call (no copy into the buffer)
            buf, self._buf = self._buf, bytearray()
            self._write_all([buf, data])
        return n

    def hexdigest(self) -> str:
        """SHA-256 of everything written so far (a file opened with ``sha256=True``)."""
        if self._sha is None:
            raise ValueError(f"{self.path}: opened without sha256=True")
        return self._sha.hexdigest()

    def flush(self) -> None:
        self._flush_buffer()

    @property
    def closed(self) -> bool:
        return self.fd is None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written + len(self._buf)

    def close(self) -> None:
        """Write what is gathered and close (the last chunk or two stay in the page cache, being written back)."""
        if self.fd is None:
            return
        fd = self.fd
        try:
            self._flush_buffer()
        finally:
            self.fd = None
            os.close(fd)

    def __enter__(self) -> "WriteBehindFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------------------------
    def _flush_buffer(self) -> None:
        if self._buf:
            buf, self._buf = self._buf, bytearray()
            self._write_all([buf])

    def _write_all(self, pieces: list[Any]) -> None:
        assert self.fd is not None
        views = [v for v in (memoryview(p).cast("B") for p in pieces) if len(v)]
        while views:
            n = os.writev(self.fd, views)
            if n <= 0:
                raise OSError(f"{self.path}: the write made no progress")
            self._written += n
            while views and n >= len(views[0]):
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]
        if self._sfr is not None:
            self._behind()

    def _behind(self) -> None:
        """Start write-back of each whole chunk written since the last call; wait for and drop the chunk before."""
        assert self.fd is not None and self._sfr is not None
        while self._written - self._queued >= self.chunk:
            start = self._queued
            if self._sfr(self.fd, start, self.chunk, _WRITE) != 0:
                self._sfr = None  # this file system refuses: write normally from here on
                return
            if start >= self.chunk:
                prev = start - self.chunk
                self._sfr(self.fd, prev, self.chunk, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
                try:
                    os.posix_fadvise(self.fd, prev, self.chunk, os.POSIX_FADV_DONTNEED)
                except OSError:  # advice only: a file system that refuses it keeps its pages
                    self._sfr = None
                    return
            self._queued += self.chunk
