"""``manifest.json``: every output file with its format, split, counts, size and SHA-256, sorted by path.

Exports return :class:`ManifestEntry` objects; :func:`write_manifest` adds the pipeline's own files
(``records.jsonl``, ``samples.jsonl``, ``rejects.jsonl``, ``images/``) when present and not already listed."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from medvl.core.hashing import file_digest

MANIFEST_NAME = "manifest.json"

# pipeline files picked up automatically: path -> (format, which count field their rows go in)
STANDARD_FILES = {"records.jsonl": ("medvl-records-jsonl", "images"), "samples.jsonl": ("medvl-samples-jsonl", "samples"),
                  "rejects.jsonl": ("medvl-rejects-jsonl", "rows")}


@dataclass
class ManifestEntry:
    """One output file (or folder, path ending in "/") and what it holds."""

    path: str  # relative to the output folder, "/" separators
    format: str  # e.g. "llava-json", "messages-jsonl", "parquet", "mixture-json", "dataset-card-md"
    split: str | None = None
    samples: int | None = None  # samples (rows) in the file
    images: int | None = None  # distinct images referenced or held
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "split": self.split, "samples": self.samples,
                "images": self.images, "extra": dict(sorted(self.extra.items()))}


def count_lines(path: Path) -> int:
    """Non-empty lines of a text file (rows of a JSONL file)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def standard_entries(out_dir: str | Path) -> list[ManifestEntry]:
    """Entries for the pipeline's own files that exist in ``out_dir``: the JSONL tables and ``images/``."""
    out_dir = Path(out_dir)
    found: list[ManifestEntry] = []
    for name, (fmt, field_) in STANDARD_FILES.items():
        p = out_dir / name
        if p.is_file():
            n = count_lines(p)
            e = ManifestEntry(path=name, format=fmt)
            if field_ == "rows":
                e.extra["rows"] = n
            else:
                setattr(e, field_, n)
            found.append(e)
    img_dir = out_dir / "images"
    if img_dir.is_dir():
        # the SHA-256 of the sorted listing joined by newlines, streamed: a build of millions of images never
        # holds its listing
        h, n, total = hashlib.sha256(), 0, 0
        for rel, size in _files_in_string_order(img_dir, "images/"):
            h.update(("\n" if n else "").encode("utf-8") + rel.encode("utf-8"))
            n += 1
            total += size
        found.append(ManifestEntry(path="images/", format="png-dir", images=n,
                                   extra={"bytes": total, "listing_sha256": h.hexdigest()}))
    return found


def _files_in_string_order(folder: Path, prefix: str):
    """``(prefix + relative path, size)`` of every file under ``folder`` (symlinked folders not entered), in
    the order ``sorted()`` gives the path strings: a folder's entries sorted by name, a sub-folder's name
    with its "/" (so "ab.png" comes before the files of folder "ab"). Holds one folder's entries at a time."""
    with os.scandir(folder) as it:
        entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
    for key, e in sorted(entries, key=lambda x: x[0]):
        if key.endswith("/"):
            yield from _files_in_string_order(Path(e.path), prefix + key)
        elif e.is_file():
            yield prefix + e.name, e.stat().st_size


def write_manifest(out_dir: str | Path, entries: Iterable[ManifestEntry],
                   extra: Iterable[ManifestEntry] | dict[str, Any] | None = None,
                   info: dict[str, Any] | None = None, checksums: bool = True,
                   include_standard: bool = True, known_sha256: dict[str, str] | None = None) -> Path:
    """Write ``<out_dir>/manifest.json`` and return its path.

    ``entries`` come from the exports; ``extra`` may be more entries (e.g. the pipeline's files) or a dict
    of top-level facts (merged into ``info``). Later entries for the same path replace earlier ones; the
    standard pipeline files are added when present and not listed. Files get ``bytes`` and (with
    ``checksums``) ``sha256``; ``known_sha256`` (path -> sha256) gives checksums already computed by whoever
    wrote the file (the build's export tasks), so they are not read again. Output is sorted and has no
    timestamps, so equal inputs give equal bytes."""
    out_dir = Path(out_dir)
    info = dict(info or {})
    all_entries = list(entries)
    if isinstance(extra, dict):
        info.update(extra)
    elif extra is not None:
        all_entries += list(extra)
    by_path: dict[str, ManifestEntry] = {}
    if include_standard:
        for e in standard_entries(out_dir):
            by_path[e.path] = e
    for e in all_entries:
        by_path[e.path] = e
    by_path.pop(MANIFEST_NAME, None)
    files = []
    for path in sorted(by_path):
        d = by_path[path].to_dict()
        p = out_dir / path
        if p.is_file():
            d["bytes"] = p.stat().st_size
            if checksums:
                d["sha256"] = (known_sha256 or {}).get(path) or file_digest(p)
        elif not path.endswith("/"):
            d["missing"] = True
        files.append(d)
    totals: dict[str, dict[str, int]] = {}
    for d in files:
        # a split's rows once per format: the mixture's per-dataset parts and its top-level alias repeat rows
        # that the split's own file (llava/<split>.jsonl, mixture/<split>.json) already counts
        if d["extra"].get("dataset") is not None or d["path"] == "mixture.json":
            continue
        if d["split"] is not None and d["samples"] is not None:
            per = totals.setdefault(d["format"], {})
            per[d["split"]] = per.get(d["split"], 0) + d["samples"]
    doc = {"manifest_version": 1, "info": dict(sorted(info.items())), "files": files,
           "samples_by_format_and_split": {k: dict(sorted(v.items())) for k, v in sorted(totals.items())}}
    target = out_dir / MANIFEST_NAME
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target
