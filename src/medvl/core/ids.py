"""Provenance ids in GMAI-VL's shape: ``dimension#task#modality#dataset#dirs...#label#file``.

The folder and file parts are escaped reversibly (``%`` -> ``%25``, ``#`` -> ``%23``, ``@`` -> ``%40`` (it
starts the slice suffix), white space and other unprintable characters -> ``%XX`` of their UTF-8 bytes), so
``img 1.png``, ``img_1.png`` and ``img#1.png`` give three different ids and :func:`parse_record_id` gives the
path back. The descriptive fields (modality,
label) are slugs: they are not needed for uniqueness, which comes from dataset + path + slice."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from medvl.core.records import ImageRecord

_BAD = re.compile(r"[#\s]+")


def slug(text: str) -> str:
    """'#' and whitespace replaced, so a descriptive field splits cleanly on '#' (not reversible)."""
    return _BAD.sub("_", str(text).strip()).strip("_") or "none"


def escape_part(text: str) -> str:
    """Reversible escape of one path component for an id (see the module docstring)."""
    out = []
    for ch in str(text):
        if ch in "%#@" or ch.isspace() or not ch.isprintable():
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out) or "%00"


def unescape_part(text: str) -> str:
    return "" if text == "%00" else unquote(text)


def slice_suffix(sl: dict | None) -> str:
    if not sl:
        return ""
    if "axis" in sl:
        return f"@{sl['axis']}{int(sl['index']):04d}"
    if "frame" in sl:  # video frames also carry their time stamp (DICOM multi-frame slices have none)
        t = f"-t{float(sl['time_s']):.3f}s" if "time_s" in sl else ""
        return f"@frame{int(sl['frame']):04d}{t}"
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
    fields = [slug(f) for f in (rec.dimension, rec.task, rec.modality.lower(), rec.dataset)]
    fields += [escape_part(d) for d in dirs]
    fields += [slug(label), escape_part(fname) + slice_suffix(rec.slice)]
    return "#".join(fields)


def parse_record_id(rid: str) -> dict[str, str]:
    """Inverse of :func:`record_id` for the fixed fields (dirs are joined back with '/', paths unescaped)."""
    p = rid.split("#")
    if len(p) < 6:
        raise ValueError(f"not a medvl record id: {rid!r}")
    return {"dimension": p[0], "task": p[1], "modality": p[2], "dataset": p[3],
            "dirs": "/".join(unescape_part(d) for d in p[4:-2]), "label": p[-2], "file": unescape_part(p[-1])}
