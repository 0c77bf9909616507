"""Exact-duplicate removal and MD5 exclusion lists (the leakage guard GMAI-VL ran against benchmark images).

Both take records and return ``(kept, rejects)``: kept records keep their input order, every dropped
record becomes a :class:`~medvl.core.records.Reject` naming the record and the reason, so counts add up
(in = kept + rejected)."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
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


@dataclass
class Merge:
    """One identical copy folded into the record that was kept, and what it added."""

    kept_id: str
    dropped_id: str
    kept_patient: str
    dropped_patient: str
    kept_dataset: str
    dropped_dataset: str
    added_labels: list[str] = field(default_factory=list)
    added_regions: int = 0
    added_view: str | None = None
    labels_differ: bool = False  # the two copies carried different label sets

    @property
    def same_dataset(self) -> bool:
        return self.kept_dataset == self.dropped_dataset


def _merge_into(base: ImageRecord, other: ImageRecord) -> Merge:
    """Fold ``other``'s annotations into ``base`` (same image content): labels union, boxes not already
    there, view, missing descriptive fields and metadata keys; labels stay exhaustive only if both were."""
    m = Merge(kept_id="", dropped_id=other.id, kept_patient=base.patient_key, dropped_patient=other.patient_key,
              kept_dataset=base.dataset, dropped_dataset=other.dataset,
              labels_differ=set(base.labels) != set(other.labels))
    m.added_labels = sorted(set(other.labels) - set(base.labels))
    base.labels = sorted(set(base.labels) | set(other.labels))
    have = {(r.label, tuple(round(v, 2) for v in r.box)) for r in base.regions}
    for r in other.regions:
        k = (r.label, tuple(round(v, 2) for v in r.box))
        if k not in have:
            base.regions = [*base.regions, r]  # re-assigned, not appended: the cached id is forgotten
            have.add(k)
            m.added_regions += 1
    if base.view is None and other.view is not None:
        base.view = m.added_view = other.view
    for f in ("department", "body_region", "clinical_task", "licence"):
        if getattr(base, f) is None and getattr(other, f) is not None:
            setattr(base, f, getattr(other, f))
    base.extra = dict(base.extra)
    for k, v in other.extra.items():
        base.extra.setdefault(k, v)
    base.extra["labels_exhaustive"] = bool(base.extra.get("labels_exhaustive")) and bool(
        other.extra.get("labels_exhaustive"))
    base.extra["merged_from"] = sorted({*base.extra.get("merged_from", []), other.id})
    if m.added_regions and base.task == "cls":
        base.task = other.task
    return m


def dedup_records(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], list[Reject], list[Merge]]:
    """Drop exact duplicates by image content hash (sha256 of the written PNG), merging their annotations.

    Within each group of equal hashes the most richly annotated record is kept (a mask, then more boxes,
    then more labels, ties by id) and every other copy's annotations are merged into it (see
    :func:`_merge_into`: the NIH labels table and box list give one record with the findings, the view and
    the boxes). Each dropped copy becomes a reject (stage ``"dedup"``) naming both ids and what it added, and
    a :class:`Merge` (its patient key is kept together with the kept one's by the split). Kept records stay
    in input order (they are copies: the input records are not changed)."""
    records = list(records)
    keeper: dict[str, ImageRecord] = {}
    for rec in sorted(records, key=lambda r: (_richness(r), _order_key(r))):
        keeper.setdefault(rec.sha256, rec)
    merged = {id(r): dataclasses.replace(r, labels=list(r.labels), regions=list(r.regions), extra=dict(r.extra))
              for r in keeper.values()}
    kept: list[ImageRecord] = []
    rejects: list[tuple[tuple[str, str, str], Reject]] = []
    merges: list[Merge] = []
    done: list[tuple[ImageRecord, ImageRecord, Merge]] = []
    for rec in sorted(records, key=_order_key):  # merge order independent of input order
        first = keeper[rec.sha256]
        if first is rec:
            continue
        base = merged[id(first)]
        done.append((rec, base, _merge_into(base, rec)))
    for rec, base, m in done:  # reasons name the kept record by its final id (its labels may have grown)
        m.kept_id = base.id
        merges.append(m)
        added = [f"labels {', '.join(m.added_labels)}"] if m.added_labels else []
        added += [f"{m.added_regions} box(es)"] if m.added_regions else []
        added += [f"view {m.added_view}"] if m.added_view else []
        reason = (f"{rec.id}: duplicate of {base.id} (identical image content, sha256 {rec.sha256[:16]}); "
                  + (f"merged into it: {'; '.join(added)}" if added else "nothing to add, dropped"))
        rejects.append((_order_key(rec), Reject(source=rec.dataset, item=_item(rec), reason=reason, stage="dedup")))
    for rec in records:
        if keeper[rec.sha256] is rec:
            kept.append(merged[id(rec)])
    rejects.sort(key=lambda kr: kr[0])
    return kept, [r for _, r in rejects], merges


def file_md5(path: Path) -> str:
    """Hex MD5 of a file's bytes (what GMAI-VL compared against benchmark images)."""
    return file_digest(path, "md5")


def exclude_by_md5(records: Iterable[ImageRecord], md5s: Iterable[str],
                   out_dir: str | Path) -> tuple[list[ImageRecord], list[Reject]]:
    """Drop records whose image is on an exclusion list (``medvl audit`` overlaps, GMAI-VL's MD5 guard).

    A record matches when any of its three MD5s is listed: the written PNG's (``out_dir / record.image``), the
    source file's bytes (``record.source_md5``) or the source pixels' (``record.pixel_md5``, before resizing).
    The last two do not depend on build settings, so an exclusion list survives a change of ``max_side``.
    A record whose image file cannot be read is rejected too (stage ``"audit"``), naming the file."""
    out_dir = Path(out_dir)
    wanted = {m.strip().lower() for m in md5s if m and m.strip()}
    records = list(records)
    if not wanted:
        return records, []
    cache: dict[str, str | OSError] = {}
    kept: list[ImageRecord] = []
    rejects: list[tuple[tuple[str, str, str], Reject]] = []
    for rec in records:
        if rec.source_md5 in wanted:
            reason = f"{rec.id}: source file MD5 {rec.source_md5} is on the exclusion list (overlaps benchmark data)"
        elif rec.pixel_md5 in wanted:
            reason = (f"{rec.id}: source pixel MD5 {rec.pixel_md5} is on the exclusion list (the same pixels as "
                      "benchmark data)")
        else:
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
    """MD5s from a JSON list of strings or of objects with MD5 keys (``md5``, ``source_md5``, ``pixel_md5``,
    ``bench_md5``, ``bench_pixel_md5``; or such a list under ``"overlaps"`` / ``"items"`` / ``"md5s"`` in a
    top-level object, as ``medvl audit`` writes it). Null values are skipped."""
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
        if isinstance(entry, dict):
            present = [f for f in _MD5_FIELDS if f in entry]
            if not present:
                raise ValueError(f"{path}: entry [{i}]: expected an 'md5' of 32 hex digits, got none")
            for f in present:
                value = entry[f]
                if value is None:
                    continue  # e.g. an overlap without a training image file (nothing to exclude)
                if not isinstance(value, str) or not _MD5.match(value.strip()):
                    raise ValueError(f"{path}: entry [{i}]: expected {f!r} of 32 hex digits, got {value!r}")
                out.add(value.strip().lower())
            continue
        if not isinstance(entry, str) or not _MD5.match(entry.strip()):
            raise ValueError(f"{path}: entry [{i}]: expected an 'md5' of 32 hex digits, got {entry!r}")
        out.add(entry.strip().lower())
    return out


# every MD5 an audit overlap carries: the training PNG's, the training record's source file and source pixels,
# and the benchmark image's file and pixels (so a rebuild that reads the benchmark file itself is caught too)
_MD5_FIELDS = ("md5", "source_md5", "pixel_md5", "bench_md5", "bench_pixel_md5")


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
