"""Shards on disk: how build stages hand work to each other without holding a corpus in memory.

A shard is a UTF-8 JSON-lines file written through a temporary name and renamed into place, so a file under
its real name is always complete (a killed writer leaves only ``*.tmp-*`` files, which are never read).
The :class:`Journal` records finished units of work (one JSON line each, flushed); a resumed build trusts a
unit only when the journal lists it *and* its shard still has the recorded checksum.
:func:`merge_sorted` streams several individually sorted shards as one sorted stream (k-way merge), and
:func:`external_sort` sorts any stream of lines in runs of bounded size."""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import uuid
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


class ShardWriter:
    """Write lines to ``path`` through a unique temporary file; on a clean exit the file is renamed into
    place and ``count`` / ``sha256`` describe it. On an error the temporary file is removed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self.sha256 = ""
        self._hash = hashlib.sha256()

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._f = open(self._tmp, "wb")
        return self

    def write(self, line: str) -> None:
        """One line (without its newline)."""
        data = (line + "\n").encode("utf-8")
        self._hash.update(data)
        self._f.write(data)
        self.count += 1

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._f.close()
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        os.replace(self._tmp, self.path)
        self.sha256 = self._hash.hexdigest()


def write_shard(path: str | Path, lines: Iterable[str]) -> tuple[int, str]:
    """Write ``lines`` as a shard; returns (line count, sha256 of the file)."""
    with ShardWriter(path) as w:
        for line in lines:
            w.write(line)
    return w.count, w.sha256


def read_lines(path: str | Path) -> Iterator[str]:
    """The lines of a shard, without newlines."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n")


def shard_ok(path: str | Path, sha256: str) -> bool:
    """True when the file exists and has exactly the recorded checksum (a half-written or changed file is
    never trusted)."""
    from medvl.core.hashing import file_digest

    try:
        return file_digest(path) == sha256
    except OSError:
        return False


def merge_sorted(paths: Iterable[str | Path], key: Callable[[str], Any]) -> Iterator[str]:
    """One sorted stream of the lines of several shards, each sorted by ``key`` (ties keep shard order)."""
    return heapq.merge(*(read_lines(p) for p in paths), key=key)


def merge_distinct(paths: Iterable[str | Path], key: Callable[[str], Any]) -> Iterator[str]:
    """The distinct lines of shards each sorted by ``key``, merged in that order (each line once)."""
    prev = None
    for line in merge_sorted(paths, key=key):
        if line != prev:
            yield line
            prev = line


def key_of_line(line: str) -> Any:
    """The key a keyed shard line starts with (JSON-encoded, then a tab), decoded."""
    return json.loads(line[:line.index("\t")])


def merge_keyed(paths: Iterable[str | Path], duplicate: Callable[[Any], Exception]) -> Iterator[tuple[Any, str]]:
    """``(key, body)`` of the ``<JSON key>\t<body>`` lines of shards each sorted by key, merged in key order;
    a key met twice raises ``duplicate(key)``."""
    def keyed(path: str | Path) -> Iterator[tuple[Any, str]]:  # each key decoded once (the merge compares it)
        for line in read_lines(path):
            tab = line.index("\t")
            yield json.loads(line[:tab]), line[tab + 1:]

    prev = None
    for key, body in heapq.merge(*(keyed(p) for p in paths), key=itemgetter(0)):  # ties keep shard order
        if key == prev:
            raise duplicate(key)
        prev = key
        yield key, body


def external_sort(lines: Iterable[str], key: Callable[[str], Any], tmp_dir: str | Path,
                  run_lines: int = 100_000) -> Iterator[str]:
    """``lines`` sorted by ``key`` in memory bounded by ``run_lines``: sorted runs written to ``tmp_dir``,
    then merged (the run files are removed when the stream is exhausted)."""
    tmp_dir = Path(tmp_dir)
    runs: list[Path] = []
    buf: list[str] = []

    def flush() -> None:
        buf.sort(key=key)
        p = tmp_dir / f"run-{len(runs):05d}.jsonl"
        write_shard(p, buf)
        runs.append(p)
        buf.clear()

    for line in lines:
        buf.append(line)
        if len(buf) >= run_lines:
            flush()
    if not runs:  # fits in one run: no files needed
        buf.sort(key=key)
        yield from buf
        return
    if buf:
        flush()
    try:
        yield from merge_sorted(runs, key)
    finally:
        for p in runs:
            p.unlink(missing_ok=True)


class Journal:
    """Finished units of work, one JSON object per line: ``{"unit": name, ...facts}``. Each append is flushed
    (a killed process loses nothing it journaled); a torn last line (the writer was killed mid-line) is ignored
    when reading. Appends are not fsynced: the shards they describe are not either, so after a power cut what
    decides is the check a resume makes anyway (the entry *and* the shard's checksum), and an fsync per entry
    made ext4 write back every image written so far (50 ms per entry on a VM disk: 1.7 s of a 37 s build).

    Fault injection for tests: with ``MEDVL_FAILPOINT=<unit prefix>@<n>`` in the environment the process
    kills itself (SIGKILL, like ``kill -9``) right after journaling the n-th unit whose name starts with
    the prefix, so a test can stop a real build at an exact point."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(entry, dict) and "unit" in entry:
                        self.done[entry["unit"]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        fail = os.environ.get("MEDVL_FAILPOINT", "")
        self._fail_prefix, _, n = fail.rpartition("@")
        self._fail_left = int(n) if fail and n.isdigit() else 0

    def get(self, unit: str) -> dict[str, Any] | None:
        return self.done.get(unit)

    def add(self, unit: str, **facts: Any) -> dict[str, Any]:
        entry = {"unit": unit, **facts}
        self._f.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        self._f.flush()
        self.done[unit] = entry
        if self._fail_left and unit.startswith(self._fail_prefix):
            self._fail_left -= 1
            if not self._fail_left:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
        return entry

    def close(self) -> None:
        self._f.close()


TAIL_TASKS = 4
"""The last ``TAIL_TASKS * shard_units`` units of a source (read stage), and the last ``TAIL_TASKS * chunk_records``
records (generate stage), go into smaller tasks (:func:`tail_sizes`), so a stage does not end with one worker
finishing a full task while the others idle (a full read task of 512 px images takes 1-2 s)."""
TAIL_HALVINGS = 4
"""How many times the tail's task size halves at the very end (two tasks of each size)."""


def tail_sizes(n: int, shard_units: int) -> list[int]:
    """Sizes of the tasks for the last ``n`` units (at most ``(TAIL_TASKS + 1) * shard_units``): tasks of
    ``step = ceil(shard_units / TAIL_TASKS)`` units, then two of ``step // 2``, two of ``step // 4``, ... (at most
    ``TAIL_HALVINGS`` halvings, never below 1), so the workers run out of work within a few units of each other (with
    quarter-size tasks only, one worker idled up to a whole task, 0.3 s of a 2-process build). When ``n`` is smaller
    than that end, its last tasks are kept. A function of ``n`` and ``shard_units`` only (not of the number of
    workers), so a resumed build cuts its units into the same tasks."""
    step = max(1, -(-shard_units // TAIL_TASKS))
    ends: list[int] = []  # the smallest last
    size = step // 2
    for _ in range(TAIL_HALVINGS):
        if size < 1:
            break
        ends += [size, size]
        size //= 2
    last: list[int] = []  # filled from the very end
    left = n
    for size in reversed(ends):
        if left <= 0:
            break
        last.append(min(size, left))
        left -= last[-1]
    return [min(step, left - lo) for lo in range(0, left, step)] + last[::-1]
