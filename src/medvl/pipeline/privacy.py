"""Scrubbing identifying values out of everything a build writes.

Readers collect the identifying header values they saw (``Item.sensitive``: patient name and id, dates,
institution, physicians, accession number, ...). Before any string from an item reaches a record, it passes
through :func:`scrub`, which replaces every occurrence of those values, and of the common spellings of a
DICOM person name (``DOE^JOHN`` -> ``DOE JOHN``, ``DOE_JOHN``, ``John Doe``, the parts alone), with
``REDACTED``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "REDACTED"
_MIN_LEN = 3  # shorter values (e.g. a sex code "M") are not identifying on their own and would shred text


def variants(value: str) -> set[str]:
    """Spellings under which an identifying value may show up in paths and text."""
    v = str(value).strip()
    out: set[str] = set()
    if len(v) >= _MIN_LEN:
        out.add(v)
    if "^" in v:
        parts = [p.strip() for p in v.split("^") if p.strip()]
        for sep in (" ", "_", "-", ".", ""):
            out.add(sep.join(parts))
            out.add(sep.join(reversed(parts)))
        out.update(p for p in parts if len(p) >= _MIN_LEN)
    if re.fullmatch(r"\d{8}", v):  # DICOM DA: YYYYMMDD -> also YYYY-MM-DD, YYYY_MM_DD, YYYY.MM.DD
        for sep in ("-", "_", ".", "/"):
            out.add(f"{v[:4]}{sep}{v[4:6]}{sep}{v[6:]}")
    return {o for o in out if len(o) >= _MIN_LEN}


class Scrubber:
    def __init__(self, values: Iterable[str]):
        vs: set[str] = set()
        for v in values:
            if v is None:
                continue
            vs |= variants(str(v))
        # longest first so "DOE JOHN" goes before "DOE"
        self.values = sorted(vs, key=lambda s: (-len(s), s))
        self._rx = re.compile("|".join(re.escape(v) for v in self.values), re.IGNORECASE) if self.values else None

    def __call__(self, obj: Any) -> Any:
        if self._rx is None:
            return obj
        if isinstance(obj, str):
            return self._rx.sub(REDACTED, obj)
        if isinstance(obj, list):
            return [self(o) for o in obj]
        if isinstance(obj, tuple):
            return tuple(self(o) for o in obj)
        if isinstance(obj, dict):
            return {self(k): self(v) for k, v in obj.items()}
        return obj
