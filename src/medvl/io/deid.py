"""Which DICOM attributes identify someone: DICOM PS3.15 Annex E, Table E.1-1 (Basic Application Level
Confidentiality Profile), shipped as ``data/ps3_15_annex_e.tsv`` with its source and edition named in its
header (regenerate with ``tools/make_annex_e_table.py``).

Every attribute of the profile has a role for medvl:

- ``identifier``: names, IDs, UIDs, dates and times, institutions, addresses, phone numbers, stations,
  serial numbers. Their values are collected (:func:`identifying_values`) and scrubbed from every string a
  build writes (:mod:`medvl.core.privacy`).
- ``text``: free text and labels that may *contain* identifiers (descriptions, comments, protocol names).
  Never copied to an output, except the allow-listed StudyDescription / SeriesDescription, and only when they
  contain no identifier value; not scrub targets themselves (a StudyDescription "Pancreas" must not turn the
  word "pancreas" into a redaction).
- ``attribute``: characteristics that identify no one alone (sex, age, size, weight, GPS references): never
  copied, not scrub targets (scrubbing an EthnicGroup "WHITE" would wreck "white matter").
- ``sequence``: the elements inside are classified one by one.

Private attributes (odd groups) are removed by the profile; medvl never copies them, and their person names,
dates, times and UIDs, and their LO/SH values that contain a digit (ID-shaped), are treated as identifiers."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

TABLE = Path(__file__).parent / "data" / "ps3_15_annex_e.tsv"
ROLES = ("identifier", "text", "attribute", "sequence")
_PRIVATE_IDENTIFIER_VRS = frozenset({"PN", "DA", "DT", "TM", "UI"})
_MIN_LEN = 2  # a one-character value identifies no one


@dataclass(frozen=True)
class ProfileTable:
    """The profile's attributes: exact tags -> role, plus group ranges (e.g. curve data ``50xx,xxxx``)."""

    roles: dict[int, str]
    ranges: tuple[tuple[int, int, int, int, str], ...]  # (group, element, group mask, element mask, role)
    edition: str

    def role(self, tag: int) -> str | None:
        r = self.roles.get(tag)
        if r is not None:
            return r
        g, e = tag >> 16, tag & 0xFFFF
        for group, elem, gmask, emask, role in self.ranges:
            if g & gmask == group & gmask and e & emask == elem & emask:
                return role
        return None


def _mask(hexdigits: str) -> tuple[int, int]:
    value = int(hexdigits.replace("x", "0"), 16)
    mask = int("".join("0" if c == "x" else "F" for c in hexdigits), 16)
    return value, mask


@lru_cache(maxsize=None)
def profile_table() -> ProfileTable:
    """The shipped Table E.1-1 (read once)."""
    roles: dict[int, str] = {}
    ranges: list[tuple[int, int, int, int, str]] = []
    edition = ""
    with TABLE.open(encoding="utf-8") as fh:
        lines = []
        for line in fh:
            if line.startswith("#"):
                if "Confidentiality Profile (" in line:
                    edition = line.rsplit("(", 1)[1].split(")")[0]
                continue
            lines.append(line)
    for row in csv.DictReader(lines, delimiter="\t"):
        role = row["role"]
        if role not in ROLES:
            raise ValueError(f"{TABLE.name}: tag {row['tag']} has unknown role {role!r}")
        g, e = row["tag"].strip("()").split(",")
        if "x" in g or "x" in e:
            (gv, gm), (ev, em) = _mask(g), _mask(e)
            ranges.append((gv, ev, gm, em, role))
        else:
            roles[(int(g, 16) << 16) | int(e, 16)] = role
    return ProfileTable(roles=roles, ranges=tuple(ranges), edition=edition)


def element_role(elem: Any) -> str | None:
    """The role of a data element (None: not in the profile, so not identifying; e.g. Modality, Rows)."""
    tag = int(elem.tag)
    if (tag >> 16) % 2 == 1:  # private
        if 0x0010 <= tag & 0xFFFF <= 0x00FF:  # private creator ("GEMS_ACQU_01"): names a vendor block, no one
            return None
        if elem.VR in _PRIVATE_IDENTIFIER_VRS:
            return "identifier"
        if elem.VR in ("LO", "SH") and any(ch.isdigit() for ch in str(elem.value or "")):
            return "identifier"
        return "text"
    return profile_table().role(tag)


def person_name_value(v: Any) -> str:
    """A person name as ``family^given^middle^prefix^suffix`` (components joined by ``^``), the form the
    scrubber reads name parts from. A name written without ``^`` but with spaces ("John Doe", a common
    non-conformant spelling) has its words as components."""
    s = str(v).strip()
    groups = [g for g in s.split("=") if g.strip()] or [s]
    out = []
    for g in groups:
        if "^" not in g and " " in g.strip():
            g = "^".join(g.split())
        out.append(g.strip())
    return "=".join(out)


def identifying_values(ds: Dataset) -> set[str]:
    """Every identifier value in a header (recursing into sequences, file meta included), per the profile.
    Person names come as ``family^given`` strings (see :func:`person_name_value`)."""
    found: set[str] = set()

    def add(value: Any, vr: str) -> None:
        vals = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        for v in vals:
            if v is None or isinstance(v, (bytes, bytearray)):
                continue
            s = person_name_value(v) if vr == "PN" else str(v).strip()
            if len(s) >= _MIN_LEN:
                found.add(s)

    def visit(_ds: Dataset, elem: Any) -> None:
        if elem.VR == "SQ" or elem.value is None or elem.value == "":
            return
        if element_role(elem) == "identifier":
            add(elem.value, elem.VR)

    ds.walk(visit)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        found.add(str(meta.MediaStorageSOPInstanceUID).strip())
    return found
