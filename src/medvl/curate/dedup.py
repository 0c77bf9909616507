"""Exact-duplicate removal and MD5 exclusion lists (the leakage guard GMAI-VL ran against benchmark images).

Both take records and return ``(kept, rejects)``: kept records keep their input order, every dropped
record becomes a :class:`~medvl.core.records.Reject` naming the record and the reason, so counts add up
(in = kept + rejected)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from medvl.core.hashing import file_digest
from medvl.core.ids import slice_suffix
from medvl.core.records import ImageRecord, Reject

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def _item(rec: ImageRecord) -> str:
    """What a reject names: the source file plus the slice/frame when the record is one of several."""
    return rec.source_file + slice_suffix(rec.slice)


def _order_key(rec: ImageRecord) -> tuple[str, str, str]:
    """Deterministic order independent of input order: record id, then source file, then image path."""
    return (rec.id, _item(rec), rec.image)


def _richness(rec: ImageRecord) -> tuple[int, int, int]:
    """More annotation sorts first: a mask, then more regions, then more labels (negated for sorting)."""
    return (-int(rec.mask is not None), -len(rec.regions), -len(rec.labels))


def dedup_records(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], list[Reject]]:
    """Drop exact duplicates by image content hash (sha256 of the written PNG).

    Within each group of equal hashes the most richly annotated record is kept (a mask, then more boxes,
    then more labels: a box-list record beats the same image's classification row, a labelled slice beats
    an identical unlabelled one), ties broken by id; the others are rejected with stage ``"dedup"`` and a
    reason naming both ids and any labels the dropped record had that the kept one lacks. Kept records
    stay in input order."""
    records = list(records)
    keeper: dict[str, ImageRecord] = {}
    for rec in sorted(records, key=lambda r: (_richness(r), _order_key(r))):
        keeper.setdefault(rec.sha256, rec)
    kept: list[ImageRecord] = []
    rejects: list[tuple[tuple[str, str, str], Reject]] = []
    for rec in records:
        first = keeper[rec.sha256]
        if first is rec:
            kept.append(rec)
            continue
        lost = sorted((set(rec.labels) | {r.label for r in rec.regions})
                      - (set(first.labels) | {r.label for r in first.regions}))
        reason = (f"{rec.id}: duplicate of {first.id} (identical image content, sha256 {rec.sha256[:16]}); "
                  f"kept the more richly annotated record"
                  + (f"; labels only the dropped record had: {', '.join(lost)}" if lost else ""))
        rejects.append((_order_key(rec), Reject(source=rec.dataset, item=_item(rec), reason=reason, stage="dedup")))
    rejects.sort(key=lambda kr: kr[0])
    return kept, [r for _, r in rejects]


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's bytes (what GMAI-VL compared against benchmark images)."""
    return file_digest(path, "md5")


def exclude_by_md5(records: Iterable[ImageRecord], md5s: Iterable[str],
                   out_dir: str | Path) -> tuple[list[ImageRecord], list[Reject]]:
    """Drop records whose written image file (``out_dir / record.image``) has an MD5 in ``md5s``.

    Used for ``medvl audit`` exclusions: GMAI-VL compared every training image's MD5 with the benchmark
    images. A record whose image file cannot be read is rejected too (stage ``"audit"``), naming the file."""
    out_dir = Path(out_dir)
    wanted = {m.strip().lower() for m in md5s if m and m.strip()}
    records = list(records)
    if not wanted:
        return records, []
    cache: dict[str, str | OSError] = {}
    kept: list[ImageRecord] = []
    rejects: list[tuple[tuple[str, str, str], Reject]] = []
    for rec in records:
        if rec.image not in cache:
            try:
                cache[rec.image] = file_md5(out_dir / rec.image)
            except OSError as e:
                cache[rec.image] = e
        got = cache[rec.image]
        if isinstance(got, OSError):
            reason = f"{rec.id}: cannot read image file {rec.image} to check its MD5 ({got.strerror or got})"
        elif got in wanted:
            reason = f"{rec.id}: image MD5 {got} is on the exclusion list (overlaps benchmark/evaluation data)"
        else:
            kept.append(rec)
            continue
        rejects.append((_order_key(rec), Reject(source=rec.dataset, item=_item(rec), reason=reason, stage="audit")))
    rejects.sort(key=lambda kr: kr[0])
    return kept, [r for _, r in rejects]


def _md5s_from_json(data: object, path: Path) -> set[str]:
    """MD5s from a JSON list of strings or of objects with an ``"md5"`` key (or such a list under
    ``"overlaps"`` / ``"items"`` / ``"md5s"`` in a top-level object, as ``medvl audit`` writes it).
    Objects whose ``"md5"`` is null are skipped."""
    if isinstance(data, dict):
        for key in ("overlaps", "items", "md5s", "exclude"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            raise ValueError(f"{path}: expected a JSON list (or an object with an 'overlaps' list) of MD5s")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of MD5 strings or objects with 'md5', got {type(data).__name__}")
    out: set[str] = set()
    for i, entry in enumerate(data):
        value = entry.get("md5") if isinstance(entry, dict) else entry
        if isinstance(entry, dict) and "md5" in entry and value is None:
            continue  # an overlap without a training image file (nothing to exclude)
        if not isinstance(value, str) or not _MD5.match(value.strip()):
            raise ValueError(f"{path}: entry [{i}]: expected an 'md5' of 32 hex digits, got {value!r}")
        out.add(value.strip().lower())
    return out


def read_exclusions(path: str | Path) -> set[str]:
    """Read an exclusion list: a text file of MD5s (one per line, ``#`` comments and blank lines allowed,
    anything after the first whitespace ignored, so ``md5sum`` output works) or a JSON file (the audit's
    overlaps file: a list of objects with ``"md5"``). Returns lower-case hex digests."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read exclusion list ({e.strerror or e})") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return _md5s_from_json(data, path)
    out: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0]
        if not _MD5.match(token):
            raise ValueError(f"{path}: line {n}: expected an MD5 of 32 hex digits, got {token!r}")
        out.add(token.lower())
    return out
