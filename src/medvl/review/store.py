"""What the review page reads and writes in a build folder.

- :class:`BuildIndex`: an SQLite index of ``samples.jsonl``, ``records.jsonl`` and ``rejects.jsonl`` (facet
  columns and byte offsets, never the text), built once into ``BUILD/review/index.sqlite`` and rebuilt only
  when one of those files changes. Filtering, counting and paging run in SQL; one page reads only its own
  lines, so a build of millions of samples is browsed in constant memory.
- :class:`Grades`: hand grades in ``BUILD/review/grades.jsonl``, append-only (one ``write`` per line under an
  exclusive lock, so concurrent graders never interleave); the last grade of a sample wins."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

INDEX_VERSION = "1"
FACETS = ("dataset", "modality", "kind", "lang", "split")
REJECT_FACETS = ("source", "stage")
TABLES = {"samples": "samples.jsonl", "records": "records.jsonl", "rejects": "rejects.jsonl"}


class ReviewError(RuntimeError):
    """A build folder the review cannot read; the message names the file."""


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, length, line) of every non-empty line."""
    off = 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield off, len(line), line
            off += len(line)


def _fingerprint(build: Path) -> str:
    parts = [INDEX_VERSION]
    for name in TABLES.values():
        p = build / name
        st = p.stat() if p.is_file() else None
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:-")
    return "|".join(parts)


class BuildIndex:
    """Facets and byte offsets of a finished build. Thread-safe for readers (one connection per thread)."""

    def __init__(self, build: Path, rebuild: bool = False):
        self.build = Path(build).resolve()
        if not (self.build / "samples.jsonl").is_file():
            raise ReviewError(f"{self.build} is not a finished medvl build: samples.jsonl is missing")
        self.path = self.build / "review" / "index.sqlite"
        self._local = threading.local()
        fp = _fingerprint(self.build)
        if rebuild or self._stored_fingerprint() != fp:
            self._create(fp)

    # building ----------------------------------------------------------------------------------
    def _stored_fingerprint(self) -> str | None:
        if not self.path.is_file():
            return None
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as db:
                row = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            return row[0] if row else None
        except sqlite3.Error:
            return None

    def _create(self, fp: str) -> None:
        """Index every line into a temporary database, then rename it into place (readers never see half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".index.{os.getpid()}.{threading.get_ident()}.sqlite")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        try:
            db.executescript(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
                "CREATE TABLE samples(n INTEGER PRIMARY KEY, id TEXT, record_id TEXT, dataset TEXT, modality TEXT,"
                " kind TEXT, lang TEXT, split TEXT, off INTEGER, len INTEGER);"
                "CREATE TABLE records(id TEXT PRIMARY KEY, off INTEGER, len INTEGER) WITHOUT ROWID;"
                "CREATE TABLE rejects(n INTEGER PRIMARY KEY, source TEXT, stage TEXT, off INTEGER, len INTEGER);")
            db.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)", self._sample_rows())
            db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?)", self._record_rows())
            if (self.build / TABLES["rejects"]).is_file():
                db.executemany("INSERT INTO rejects VALUES (?,?,?,?,?)", self._reject_rows())
            for col in FACETS:
                db.execute(f"CREATE INDEX samples_{col} ON samples({col})")
            db.execute("CREATE INDEX samples_id ON samples(id)")
            db.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (fp,))
            db.commit()
        finally:
            db.close()
        os.replace(tmp, self.path)

    def _sample_rows(self) -> Iterator[tuple]:
        path = self.build / TABLES["samples"]
        for n, (off, ln, line) in enumerate(_lines(path)):
            d = _load(line, path, n)
            m = d.get("meta") or {}
            yield (n, d.get("id"), d.get("record_id"), m.get("dataset"), m.get("modality"), d.get("kind"),
                   d.get("lang"), d.get("split"), off, ln)

    def _record_rows(self) -> Iterator[tuple]:
        path = self.build / TABLES["records"]
        if path.is_file():
            for n, (off, ln, line) in enumerate(_lines(path)):
                yield _load(line, path, n).get("id"), off, ln

    def _reject_rows(self) -> Iterator[tuple]:
        path = self.build / TABLES["rejects"]
        for n, (off, ln, line) in enumerate(_lines(path)):
            d = _load(line, path, n)
            yield n, d.get("source"), d.get("stage"), off, ln

    # reading -----------------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return db

    def _read(self, table: str, off: int, ln: int) -> dict[str, Any]:
        with open(self.build / TABLES[table], "rb") as f:
            f.seek(off)
            return json.loads(f.read(ln))

    def facets(self) -> dict[str, dict[str, int]]:
        """Counts of every value of every sample facet and reject facet (``None`` shown as "")."""
        out: dict[str, dict[str, int]] = {}
        for col in FACETS:
            rows = self.db.execute(f"SELECT {col}, COUNT(*) FROM samples GROUP BY {col} ORDER BY {col}").fetchall()
            out[col] = {("" if v is None else str(v)): c for v, c in rows}
        for col in REJECT_FACETS:
            rows = self.db.execute(f"SELECT {col}, COUNT(*) FROM rejects GROUP BY {col} ORDER BY {col}").fetchall()
            out["reject_" + col] = {("" if v is None else str(v)): c for v, c in rows}
        return out

    @staticmethod
    def _where(filters: dict[str, str], allowed: tuple[str, ...], ids: list[str] | None = None
               ) -> tuple[str, list[Any]]:
        conds, args = [], []
        for col in allowed:
            v = filters.get(col)
            if v is None or v == "*":
                continue
            conds.append(f"{col} IS NULL" if v == "" else f"{col} = ?")
            if v != "":
                args.append(v)
        if ids is not None:
            conds.append(f"id IN ({','.join('?' * len(ids))})" if ids else "0")
            args.extend(ids)
        return (" WHERE " + " AND ".join(conds)) if conds else "", args

    def samples(self, filters: dict[str, str], offset: int = 0, limit: int = 50, ids: list[str] | None = None
                ) -> tuple[int, list[dict[str, Any]]]:
        """(matching count, one page of samples with their line number ``n``) in build order."""
        where, args = self._where(filters, FACETS, ids)
        total = self.db.execute(f"SELECT COUNT(*) FROM samples{where}", args).fetchone()[0]
        rows = self.db.execute(f"SELECT n, off, len FROM samples{where} ORDER BY n LIMIT ? OFFSET ?",
                               [*args, int(limit), int(offset)]).fetchall()
        return total, [{"n": n, **self._read("samples", off, ln)} for n, off, ln in rows]

    def sample(self, n: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT off, len FROM samples WHERE n = ?", (int(n),)).fetchone()
        return None if row is None else {"n": int(n), **self._read("samples", *row)}

    def has_sample(self, sample_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM samples WHERE id = ? LIMIT 1", (sample_id,)).fetchone() is not None

    def record(self, record_id: str | None) -> dict[str, Any] | None:
        if not record_id:
            return None
        row = self.db.execute("SELECT off, len FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else self._read("records", *row)

    def rejects(self, filters: dict[str, str], offset: int = 0, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        where, args = self._where(filters, REJECT_FACETS)
        total = self.db.execute(f"SELECT COUNT(*) FROM rejects{where}", args).fetchone()[0]
        rows = self.db.execute(f"SELECT n, off, len FROM rejects{where} ORDER BY n LIMIT ? OFFSET ?",
                               [*args, int(limit), int(offset)]).fetchall()
        return total, [{"n": n, **self._read("rejects", off, ln)} for n, off, ln in rows]


def _load(line: bytes, path: Path, n: int) -> dict[str, Any]:
    try:
        d = json.loads(line)
    except ValueError as e:
        raise ReviewError(f"{path}: line {n + 1} is not JSON ({e})") from None
    if not isinstance(d, dict):
        raise ReviewError(f"{path}: line {n + 1} is not a JSON object")
    return d


class Grades:
    """Hand grades of one build (``review/grades.jsonl``): append-only, last grade wins."""

    def __init__(self, build: Path):
        self.path = Path(build) / "review" / "grades.jsonl"
        self._cache: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def add(self, sample_id: str, grade: int, comment: str = "", who: str = "") -> dict[str, Any]:
        """Append one grade (1 best .. 5 worst) with an optional comment; returns the stored line."""
        if not isinstance(grade, int) or isinstance(grade, bool) or not 1 <= grade <= 5:
            raise ValueError(f"grade must be an integer from 1 (best) to 5 (worst), got {grade!r}")
        row = {"sample_id": sample_id, "grade": grade, "comment": str(comment or "")[:2000],
               "who": str(who or "")[:100], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data = (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                os.write(fd, data)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return row

    def latest(self) -> dict[str, dict[str, Any]]:
        """sample id -> its last grade (re-read only when the file changed; bad lines skipped)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            out: dict[str, dict[str, Any]] = {}
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        out[str(row["sample_id"])] = row
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut off by a crash: that grade is lost, the others stand
            self._cache = (stamp, out)
            return out
