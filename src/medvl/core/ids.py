"""Provenance ids in GMAI-VL's shape: ``dimension#task#modality#dataset#...#label#file``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medvl.core.records import ImageRecord

_BAD = re.compile(r"[#\s]+")


def slug(text: str) -> str:
    """Lower-case, '#' and whitespace replaced, so an id splits cleanly on '#'."""
    return _BAD.sub("_", str(text).strip()).strip("_") or "none"


def slice_suffix(sl: dict | None) -> str:
    if not sl:
        return ""
    if "axis" in sl:
        return f"@{sl['axis']}{int(sl['index']):04d}"
    if "frame" in sl:
        return f"@frame{int(sl['frame']):04d}"
    return "@" + "-".join(f"{k}{v}" for k, v in sorted(sl.items()))


def record_id(rec: "ImageRecord") -> str:
    parts = rec.source_file.replace("\\", "/").split("/")
    dirs, fname = parts[:-1], parts[-1]
    if rec.labels:
        label = "+".join(rec.labels)
    elif rec.regions:
        label = "+".join(sorted({r.label for r in rec.regions}))
    else:
        label = "none"
    fields = [rec.dimension, rec.task, rec.modality.lower(), rec.dataset, *dirs, label, fname + slice_suffix(rec.slice)]
    return "#".join(slug(f) for f in fields)


def parse_record_id(rid: str) -> dict[str, str]:
    """Inverse of :func:`record_id` for the fixed fields (dirs are joined back with '/')."""
    p = rid.split("#")
    if len(p) < 6:
        raise ValueError(f"not a medvl record id: {rid!r}")
    return {"dimension": p[0], "task": p[1], "modality": p[2], "dataset": p[3], "dirs": "/".join(p[4:-2]),
            "label": p[-2], "file": p[-1]}
