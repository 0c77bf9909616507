"""WriteBehindFile: the bytes written are exactly what was given, in any mix of small and large writes, with
write-behind on or off; the written chunks really leave the page cache (checked with mincore on a real file
system); a Parquet writer writes the same file through it as to a path."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import random

import pytest

from medvl.core import writeback
from medvl.core.writeback import WriteBehindFile


def _pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 511, 512, 4096, writeback.SMALL - 1, writeback.SMALL, 100_000, writeback.BUFFER - 1, writeback.BUFFER, 3 * writeback.BUFFER + 7]
    sizes += [rng.choice([rng.randrange(1, 2048), rng.randrange(1, 300_000)]) for _ in range(200)]
    rng.shuffle(sizes)
    return [rng.randbytes(n) for n in sizes]


@pytest.mark.parametrize("behind", ["1", "0"])
def test_write_behind_file_writes_exactly_the_bytes_given(tmp_path, monkeypatch, behind):
    monkeypatch.setenv("MEDVL_WRITE_BEHIND", behind)
    pieces = _pieces(7)
    path = tmp_path / "out.bin"
    kinds = [bytes, bytearray, memoryview]
    with WriteBehindFile(path, chunk=256 << 10, sha256=True) as f:
        for i, p in enumerate(pieces):
            assert f.write(kinds[i % 3](p)) == len(p)
        assert f.tell() == sum(map(len, pieces))
    assert f.closed
    data = b"".join(pieces)
    assert path.read_bytes() == data
    assert f.hexdigest() == hashlib.sha256(data).hexdigest()  # hashed as written
    if behind == "0" or not writeback.enabled():
        assert f._queued == 0  # noqa: SLF001 - nothing was handed to the disk early
    else:  # every whole chunk was handed to the disk as the file grew
        assert f._queued == len(data) // (256 << 10) * (256 << 10)  # noqa: SLF001
    for size in (1, writeback.BUFFER):
        with pytest.raises(ValueError, match="closed file"):
            f.write(b"x" * size)
    f.close()  # closing twice is harmless


def test_write_behind_file_truncates_an_existing_file(tmp_path):
    path = tmp_path / "old.bin"
    path.write_bytes(b"y" * 10_000)
    with WriteBehindFile(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(ValueError, match="sha256=True"):
        f.hexdigest()


def _resident_fraction(path) -> float:
    """Fraction of the file's pages in the page cache (mincore on a private mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    size = os.path.getsize(path)
    page = mmap.PAGESIZE
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
        try:
            anchor = ctypes.c_char.from_buffer(mm)
            vec = (ctypes.c_ubyte * (-(-size // page)))()
            rc = libc.mincore(ctypes.addressof(anchor), size, vec)
            del anchor
            assert rc == 0, os.strerror(ctypes.get_errno())
        finally:
            mm.close()
    return sum(v & 1 for v in vec) / len(vec)


@pytest.mark.skipif(not writeback.enabled(), reason="write-behind needs Linux's sync_file_range")
def test_written_chunks_leave_the_page_cache(tmp_path, monkeypatch):
    """32 MiB written behind in 1 MiB chunks: at most the last two chunks (and the gathered tail) stay cached; the same
    file written normally stays cached whole. A file system where dropping pages does nothing (tmpfs, or one where a
    plain fsync + fadvise(DONTNEED) leaves them) is skipped."""
    monkeypatch.delenv("MEDVL_WRITE_BEHIND", raising=False)
    if _is_tmpfs(tmp_path):
        pytest.skip("tmpfs keeps every page (its files live in the page cache)")
    data = random.Random(3).randbytes(32 << 20)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(data)
    if _resident_fraction(plain) < 0.9:
        pytest.skip("the page cache does not keep a freshly written file here")
    with open(plain, "rb+") as fh:  # can this file system drop written pages at all? (overlay/network ones may not)
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if _resident_fraction(plain) > 0.5:
        pytest.skip("this file system keeps pages that fadvise(DONTNEED) asks it to drop")
    path = tmp_path / "behind.bin"
    with WriteBehindFile(path, chunk=1 << 20) as f:
        for i in range(0, len(data), 300_000):
            f.write(data[i:i + 300_000])
    fraction = _resident_fraction(path)
    assert fraction < 0.25, f"{fraction:.0%} of the file is still in the page cache"
    assert path.read_bytes() == data


def _is_tmpfs(path) -> bool:
    """Whether ``path`` lies on tmpfs (the longest mount point above it in /proc/mounts)."""
    best, fstype, target = "", "", os.path.realpath(path)
    with open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            _, mnt, typ, *_ = line.split()
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, typ
    return fstype == "tmpfs"


def test_parquet_written_through_it_equals_parquet_written_to_a_path(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = random.Random(5)
    table = pa.table({"id": [f"s{i}" for i in range(300)], "blob": [rng.randbytes(rng.randrange(0, 40_000))
                                                                     for _ in range(300)]})
    with pq.ParquetWriter(tmp_path / "direct.parquet", table.schema, compression="zstd") as w:
        for start in range(0, 300, 64):
            w.write_table(table.slice(start, 64))
    with WriteBehindFile(tmp_path / "behind.parquet", chunk=1 << 20) as sink, \
            pq.ParquetWriter(sink, table.schema, compression="zstd") as w:
        for start in range(0, 300, 64):
            w.write_table(table.slice(start, 64))
    assert (tmp_path / "behind.parquet").read_bytes() == (tmp_path / "direct.parquet").read_bytes()
    assert pq.read_table(tmp_path / "behind.parquet").equals(table)
