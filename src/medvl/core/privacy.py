"""Scrubbing identifying values out of everything a build writes.

Readers collect the identifying header values they saw (``Item.sensitive``: patient name and id, dates,
institution, physicians, accession number, ...; sources may also collect them for a whole folder in
``Source.sensitive``). Before any string from an item or a reject reaches an output, it passes through a
:class:`Scrubber`, which replaces every occurrence of those values and of their common spellings
(``DOE^JOHN`` -> ``DOE JOHN``, ``DOE_JOHN``, ``John Doe``, the name parts alone; ``Mercy General`` ->
``Mercy_General``; ``19610101`` -> ``1961-01-01``, ``01/01/1961``, ``01.01.1961``, ...), case-insensitively,
with a keyed token ``REDACTED-<6 hex>``. The token is an HMAC of the value under the recipe's salt, so two
different values give two different tokens (ids stay distinct and lead back to one file) while the value
itself cannot be read back."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "REDACTED"
_MIN_LEN = 3  # shorter values (e.g. a sex code "M") are not identifying on their own and would shred text
_SEPARATORS = (" ", "_", "-", ".", "")
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (any script)


def _date_variants(v: str) -> set[str]:
    """DICOM DA ``YYYYMMDD`` in the spellings people put in folder names and free text."""
    y, m, d = v[:4], v[4:6], v[6:]
    out = {f"{y}{s}{m}{s}{d}" for s in ("-", "_", ".", "/", " ")}
    out |= {f"{m}{s}{d}{s}{y}" for s in ("/", "-", ".")}  # US order
    out |= {f"{d}{s}{m}{s}{y}" for s in ("/", "-", ".")}  # European order
    out.add(f"{y[2:]}{m}{d}")  # YYMMDD
    return out


def variants(value: str) -> set[str]:
    """Spellings under which an identifying value may show up in paths and text."""
    v = str(value).strip()
    out: set[str] = {v}
    groups = [g for g in v.split("=") if g.strip()] or [v]  # PN: alphabetic=ideographic=phonetic
    for g in groups:
        out.add(g.strip())
        if "^" in g:  # DICOM person name: family^given^middle^prefix^suffix
            parts = [p.strip() for p in g.split("^") if p.strip()]
            for sep in _SEPARATORS:
                out.add(sep.join(parts))
                out.add(sep.join(reversed(parts)))
            out.update(parts)
    for o in list(out):
        words = [w for w in re.split(r"[\s_\-.^',]+", o) if w]
        if len(words) > 1:  # "Mercy General" also as Mercy_General, Mercy-General, MercyGeneral, Mercy.General
            for sep in _SEPARATORS:
                out.add(sep.join(words))
                out.add(sep.join(reversed(words)))
        bare = re.sub(r"['\-,.]", "", o)  # O'BRIEN -> OBRIEN, MARY-ANN -> MARYANN
        out.add(bare)
        out.update(w for w in words if len(w) >= _MIN_LEN)
    if re.fullmatch(r"(19|20)\d{6}", v):
        out |= _date_variants(v)
    return {o for o in out if len(o) >= _MIN_LEN}


def canonical(value: str) -> str:
    """What all spellings of one value have in common (lower-case letters and digits), for its token."""
    return "".join(ch for ch in str(value).lower() if ch.isalnum())


class Scrubber:
    """Replaces identifying values (and their spellings) in strings and nested lists/dicts."""

    def __init__(self, values: Iterable[str | None], key: str = "", prefilter: bool = False):
        """``prefilter``: skip strings that share no word with any spelling (for large, folder-wide value sets;
        a value glued inside a longer word is then only caught when it is at least 5 characters long)."""
        self.prefilter = prefilter
        token: dict[str, str] = {}
        # sorted, and tokens of canonical forms: the same values give the same tokens in any process
        for v in sorted({str(v).strip() for v in values if v is not None and str(v).strip()}):
            tok = self._token(canonical(v), key)
            for var in sorted(variants(v)):
                token.setdefault(var.lower(), tok)
        self._token_of = token
        # words of every spelling: a string with none of them cannot match, so the regex is skipped
        self._words = {w for var in token for w in _WORD.findall(var)}
        # longest first so "DOE JOHN" goes before "DOE"
        self.values = sorted(token, key=lambda s: (-len(s), s))
        self._rx: re.Pattern[str] | None = None

    @staticmethod
    def _token(value: str, key: str) -> str:
        mac = hmac.new(key.encode("utf-8"), value.lower().encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{REDACTED}-{mac[:6]}"

    def __bool__(self) -> bool:
        return bool(self.values)

    def _could_match(self, text: str) -> bool:
        low = text.lower()
        return any(w in self._words for w in _WORD.findall(low)) or any(v in low for v in self._joined)

    @property
    def _joined(self) -> list[str]:
        # spellings that are one glued token inside longer words ("doejohn2001") are checked as substrings
        if not hasattr(self, "_joined_cache"):
            self._joined_cache = [v for v in self.values if _WORD.fullmatch(v) and len(v) >= 5]
        return self._joined_cache

    def __call__(self, obj: Any) -> Any:
        if not self.values:
            return obj
        if isinstance(obj, str):
            if self.prefilter and not self._could_match(obj):
                return obj
            if self._rx is None:
                self._rx = re.compile("|".join(re.escape(v) for v in self.values), re.IGNORECASE)
            return self._rx.sub(lambda m: self._token_of[m.group(0).lower()], obj)
        if isinstance(obj, list):
            return [self(o) for o in obj]
        if isinstance(obj, tuple):
            return tuple(self(o) for o in obj)
        if isinstance(obj, dict):
            return {self(k): self(v) for k, v in obj.items()}
        return obj
