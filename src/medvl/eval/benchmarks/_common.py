"""Helpers shared by the benchmark loaders: locating files, reading JSON / JSONL / CSV / TSV / parquet with
clear errors, case-insensitive columns, Hugging Face image structs, base64 images, images inside zips and
yes/no answer detection. Every error is a ``BenchmarkFormatError`` naming the file and the field."""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
import sys
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

from medvl.core.yamlio import load_data_yaml
from medvl.eval.benchmarks._options import BenchmarkOptions, NoOptions, parse_options
from medvl.eval.types import Benchmark, BenchmarkFormatError, BenchmarkOptionError, EvalItem

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Reason codes of skipped rows (results.json counts them per code).
SKIP_CODES = {
    "missing_image": "the row's image file (or zip member / referenced row) is not there",
    "bad_image": "the image data cannot be decoded",
    "missing_field": "a published field is absent or empty",
    "bad_answer": "the gold answer is not one of the row's options",
    "bad_options": "the options are not a valid list / object, or too few / too many",
    "bad_line": "a JSON Lines line or a table row that cannot be read",
    "not_qa": "a medvl sample that is not a single question and answer",
}


class Skip(tuple):
    """One skipped row: an ``(item id, reason)`` pair that also carries ``code`` (a key of ``SKIP_CODES``)."""

    code: str

    def __new__(cls, item_id: str, reason: str, code: str) -> "Skip":
        if code not in SKIP_CODES:
            raise ValueError(f"unknown skip code {code!r}; allowed: {', '.join(SKIP_CODES)}")
        obj = super().__new__(cls, (str(item_id), reason))
        obj.code = code
        return obj


Skipped = list[Skip]


# ------------------------------------------------------------------------------------------ locating

def listing(folder: Path, limit: int = 20) -> str:
    """A short, sorted listing of ``folder`` for error messages."""
    if not folder.is_dir():
        return f"{folder} does not exist"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "(empty folder)"


def require_dir(data_dir: Path | str, benchmark: str) -> Path:
    """``data_dir`` as an absolute Path; raises when it is not a folder."""
    d = Path(data_dir).expanduser().resolve()
    if not d.is_dir():
        raise BenchmarkFormatError(f"{benchmark}: data folder {d} does not exist or is not a folder")
    return d


# ------------------------------------------------------------------------------------------ reading

def read_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchmarkFormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise BenchmarkFormatError(f"{path}: expected a JSON list of records, found {type(data).__name__}")
    return data


def read_jsonl(path: Path, skipped: Skipped) -> list[dict[str, Any]]:
    """JSON Lines; a line that is not a JSON object is recorded in ``skipped`` as ``<file>:<line>``."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                skipped.append(Skip(f"{path.name}:{n}", f"{path}: line {n} is not valid JSON ({e.msg})", "bad_line"))
                continue
            if not isinstance(obj, dict):
                skipped.append(Skip(f"{path.name}:{n}", f"{path}: line {n} is not a JSON object", "bad_line"))
                continue
            rows.append(obj)
    return rows


def read_delimited(path: Path, delimiter: str = ",", skipped: Skipped | None = None
                   ) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV/TSV file as (header, rows as dicts keyed by header). Large cells (base64 images) allowed.
    A row with more non-empty cells than the header has columns is malformed (its cells cannot be assigned
    to columns): it is left out and recorded in ``skipped`` as ``<file>:<line>`` (code ``bad_line``)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)  # pandas-style quoting (QUOTE_MINIMAL) for CSV and TSV
        try:
            header = next(reader)
        except StopIteration:
            raise BenchmarkFormatError(f"{path}: empty file (no header row)") from None
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                if skipped is not None:
                    skipped.append(Skip(f"{path.name}:{reader.line_num}", f"{path}: line {reader.line_num} has "
                                        f"{len(cells)} cells but the header has {len(header)} columns", "bad_line"))
                continue
            cells = cells + [""] * (len(header) - len(cells))
            rows.append(dict(zip(header, cells)))
    return header, rows


def column_map(header: Iterable[str], required: Sequence[str], path: Path,
               optional: Sequence[str] = ()) -> dict[str, str]:
    """Map wanted column names (lower case) to the file's spelling, case- and space-insensitively.
    Raises naming the file, the missing columns and the columns present."""
    header = list(header)
    norm = {re.sub(r"\s+", " ", h.strip().lower()): h for h in header}
    out, missing = {}, []
    for want in list(required) + list(optional):
        key = re.sub(r"\s+", " ", want.strip().lower())
        if key in norm:
            out[key] = norm[key]
        elif want in required:
            missing.append(want)
    if missing:
        raise BenchmarkFormatError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; present: {', '.join(map(repr, header))}")
    return out


def require_record_fields(records: list[dict[str, Any]], fields: Sequence[str], path: Path) -> None:
    """Raise when the first record lacks a published field (the file is not this benchmark's layout)."""
    if not records:
        return
    first = records[0]
    if not isinstance(first, dict):
        raise BenchmarkFormatError(f"{path}: records must be JSON objects, found {type(first).__name__}")
    missing = [f for f in fields if f not in first]
    if missing:
        raise BenchmarkFormatError(
            f"{path}: missing field(s) {', '.join(map(repr, missing))} in records; present: {', '.join(map(repr, first))}")


def missing_fields(record: Any, fields: Sequence[str]) -> list[str]:
    """Fields of ``fields`` that ``record`` lacks or holds as null (for per-row skipping)."""
    if not isinstance(record, dict):
        return list(fields)
    return [f for f in fields if record.get(f) is None]


def read_parquet_rows(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """All rows of a parquet file as dicts; raises when a required column is missing."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for bad files
        raise BenchmarkFormatError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise BenchmarkFormatError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; present: {', '.join(map(repr, table.column_names))}")
    return table.to_pylist()


def shard_files(folder: Path, split: str, benchmark: str) -> list[Path]:
    """Parquet shards ``<split>-*.parquet`` under ``folder`` (or ``folder/data``), sorted by name."""
    for d in (folder / "data", folder):
        files = sorted(d.glob(f"{split}-*.parquet"))
        if files:
            return files
    raise BenchmarkFormatError(
        f"{benchmark}: no parquet shard for split {split!r} (expected {folder}/data/{split}-*.parquet); "
        f"present: {listing(folder / 'data' if (folder / 'data').is_dir() else folder)}")


# ------------------------------------------------------------------------------------------ images

def image_cell_bytes(cell: Any) -> bytes | None:
    """Encoded image bytes from a parquet image cell (``{"bytes": ..., "path": ...}`` or raw bytes)."""
    if cell is None:
        return None
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell) or None
    if isinstance(cell, dict):
        b = cell.get("bytes")
        if b:
            return bytes(b)
    return None


def decode_base64_image(text: str) -> bytes:
    """Bytes of a base64-encoded image; raises ValueError when it is not base64 of a known image type."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"image is not valid base64 ({e})") from e
    if not looks_like_image(data):
        raise ValueError("base64 image does not decode to PNG/JPEG/GIF/BMP/WEBP/TIFF bytes")
    return data


def looks_like_image(data: bytes) -> bool:
    """True when ``data`` starts with the signature of a common image format."""
    sigs = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
    return data.startswith(sigs) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


class ZipImages:
    """Read image members of a zip straight from the archive (no extraction). ``get`` tries each candidate
    member name; the same member is returned as the same bytes object."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise BenchmarkFormatError(f"{path}: not a readable zip file ({e})") from e
        self._names = {n.replace("\\", "/"): n for n in self._zip.namelist() if not n.endswith("/")}
        self._cache: dict[str, bytes] = {}

    def get(self, candidates: Sequence[str]) -> bytes | None:
        for c in candidates:
            name = self._names.get(c)
            if name is not None:
                if name not in self._cache:
                    self._cache[name] = self._zip.read(name)
                return self._cache[name]
        return None

    def close(self) -> None:
        self._zip.close()


def safe_join(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it stays inside ``root`` (no ``..`` escapes or absolute paths), else None."""
    if not rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return None
    p = (root / rel).resolve()
    try:
        p.relative_to(root.resolve())
    except ValueError:
        return None
    return p


# ------------------------------------------------------------------------------------------ answers

@lru_cache(maxsize=1)
def _closed_vocab() -> dict[str, set[str]]:
    data = load_data_yaml((Path(__file__).with_name("closed_answers.yaml")).read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}
    for lang, d in data.items():
        out[lang] = {w for words in d.values() for w in words}
    return out


def is_yes_no(answer: str | None, lang: str | None = None) -> bool:
    """True when ``answer`` is a yes/no answer (English, or Chinese 是/否 forms)."""
    if answer is None:
        return False
    a = re.sub(r"[\s.!。！]+$", "", str(answer).strip().lower())
    vocab = _closed_vocab()
    langs = [lang] if lang in vocab else sorted(vocab)
    return any(a in vocab[lg] for lg in langs)


_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[:.)：]\s*")


def strip_option_prefix(text: str, letter: str) -> str:
    """``" B:Diffuse uptake"`` -> ``"Diffuse uptake"`` (only when the prefix is this option's letter)."""
    t = str(text)
    m = _PREFIX.match(t)
    if m and m.group(1) == letter:
        return t[m.end():].strip()
    return t.strip()


def check_split(benchmark: str, split: str | None, allowed: Sequence[str], default: str) -> str:
    """The split to load: ``split`` or ``default``; raises ValueError listing the allowed splits."""
    s = default if split is None else split
    if s not in allowed:
        raise BenchmarkOptionError(f"{benchmark}: unknown split {s!r}; allowed: {', '.join(allowed)}")
    return s


class LoaderBase(Benchmark):
    """A ``Benchmark`` that records skipped rows: after ``load``, ``self.skipped`` lists ``Skip``s (id, reason,
    ``.code``) and ``self.not_selected`` counts rows left out on purpose by an option (e.g. SLAKE ``lang``)."""

    Options: type[BenchmarkOptions] = NoOptions

    def __init__(self) -> None:
        self.skipped: Skipped = []
        self.not_selected: dict[str, int] = {}

    def _reset(self) -> None:
        self.skipped = []
        self.not_selected = {}

    def _options(self, options: dict[str, Any]) -> Any:
        """``options`` validated against ``self.Options`` (a typo or bad value must not silently change
        what is loaded): raises ``BenchmarkOptionError`` naming the option and the allowed values."""
        return parse_options(self.registry_name or type(self).__name__, self.Options, options)

    def _skip(self, item_id: str, reason: str, code: str) -> None:
        self.skipped.append(Skip(item_id, reason, code))

    def _not_selected(self, why: str) -> None:
        self.not_selected[why] = self.not_selected.get(why, 0) + 1

    def _load_qa_parquet(self, folder: Path, split: str, benchmark: str, meta: dict[str, Any]) -> list[EvalItem]:
        """Rows of the image/question/answer parquet copies (VQA-RAD, PathVQA): ids ``<split>-<row>``,
        yes/no answers "closed", all else "open"; bad rows are skipped with their reason."""
        items, n = [], 0
        for shard in shard_files(folder, split, benchmark):
            for r in read_parquet_rows(shard, ("image", "question", "answer")):
                rid, n = f"{split}-{n:05d}", n + 1
                img = image_cell_bytes(r["image"])
                if img is None:
                    self._skip(rid, f"{shard}: row {rid} has no image bytes", "missing_image")
                    continue
                if r["question"] is None or r["answer"] is None:
                    self._skip(rid, f"{shard}: row {rid} lacks question or answer", "missing_field")
                    continue
                ans = clean_str(r["answer"])
                closed = is_yes_no(ans, "en")
                items.append(EvalItem(id=rid, question=clean_str(r["question"]), images=[img], answer=ans,
                                      answer_type="closed" if closed else "open", lang="en",
                                      groups={"answer_type": "CLOSED" if closed else "OPEN"},
                                      meta={**meta, "source_file": shard.name}))
        return items


def clean_str(v: Any) -> str:
    """A cell as a stripped string ('' for None/NaN)."""
    if v is None:
        return ""
    if isinstance(v, float) and v != v:
        return ""
    return str(v).strip()
