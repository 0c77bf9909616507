"""Scrubbing identifying values out of everything a build writes.

Readers collect the identifier values they saw (``Item.sensitive``; for DICOM the identifier attributes of
PS3.15 Annex E, see :mod:`medvl.io.deid`; sources may also collect them for a whole folder in
``Source.sensitive``). Before any string from an item or a reject reaches an output, it passes through a
:class:`Scrubber`, which replaces those values with a keyed token ``REDACTED-<6 hex>`` (an HMAC of the value
under the recipe's salt: two values give two tokens, so ids stay distinct, and the value cannot be read back).

What is a target, and what is not (redaction must not eat clinical words or numbers):

- whole values, in the spellings people put in folder names (``Mercy General`` -> ``Mercy_General``,
  ``MercyGeneral``, ``mercy-general``; a date ``19610101`` -> ``1961-01-01``, ``01/01/1961``, ...);
- person names (``family^given^...``): also each real name part alone and the parts joined in both orders
  (``DOE^JOHN`` -> ``Doe``, ``John``, ``John Doe``, ``DoeJohn``). Parts that are digits only are not names;
- never single words of other values (the words "General" or "Hospital" of an institution), never fragments
  of a UID, never a word or phrase of the taxonomy (modalities, body regions, departments, tasks, views, the
  label glossary) or of the recipe's label vocabulary (``protected``): a TCIA patient named
  ``PANCREAS_0001`` is redacted as a whole, the label "pancreas" stays.

How a spelling matches (compared case-folded, character by character, so ``İSTANBUL``, ``ς``/``σ`` and
``ſ``/``s`` match as people read them): it must not continue a word of its own kind at either end: a
spelling that starts with a letter must not follow a letter, one that starts with a digit must not follow a
digit (and likewise at its end), so ``DOE`` matches in ``Doe_John`` and ``doejohn2001`` but not in
``Doerr``; a dotted UID never matches inside a longer UID. Spellings in CJK scripts match anywhere. Short
numbers (fewer than 5 digits, e.g. a PatientID ``125``) match only as a whole path component or at its start
(``125/``, ``125_ct.png``), never inside free text such as "lesion 125 mm"; but free text that holds one of
3-4 digits anywhere is not copied from a header at all (:meth:`Scrubber.contains` with ``strict``). Values
shorter than 3 characters (2 for numbers) are left alone. Of overlapping matches the earliest wins, the longest
at one start.

Cost: building a scrubber takes time in proportion to the number of values (about 13 µs per value of a DICOM
folder), and scrubbing a string takes time in proportion to its length whatever the number of values: spellings
are found by hashing the text's runs of letters and digits and its whole numbers (:class:`_Matcher`), not by
one regular expression holding every spelling, which Python compiled in time that grew faster than the
number of values (31 µs per value at 1k files, 67 µs at 40k)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

REDACTED = "REDACTED"
_MIN_LEN = 3
_SHORT_NUMBER = 5  # digit-only values shorter than this match only as path components
_SEPARATORS = (" ", "_", "-", ".", "")
_SPLIT = re.compile(r"[\s_\-.,']+")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_DIGITS = re.compile(r"[\d.\-/:\s]+")


def _date_variants(v: str) -> set[str]:
    """DICOM DA ``YYYYMMDD`` in the spellings people put in folder names and free text."""
    y, m, d = v[:4], v[4:6], v[6:8]
    out = {f"{y}{s}{m}{s}{d}" for s in ("-", "_", ".", "/", " ", "")}
    out |= {f"{m}{s}{d}{s}{y}" for s in ("/", "-", ".")}  # US order
    out |= {f"{d}{s}{m}{s}{y}" for s in ("/", "-", ".")}  # European order
    out.add(f"{y[2:]}{m}{d}")  # YYMMDD
    return out


@lru_cache(maxsize=None)
def _taxonomy_terms() -> frozenset[str]:
    """Comparison keys (letters and digits, lower-case) of every taxonomy name, synonym and glossary term."""
    from medvl import taxonomy as tx

    terms: set[str] = set()
    for voc in tx._vocabs().values():  # noqa: SLF001 - read-only use of the loaded vocabularies
        terms.update(voc.index)
        for key in voc.keys:
            entry = voc.extra[key]
            for spelling in [key, voc.names[key]["en"], *(entry.get("synonyms") or [])]:
                terms.update(canonical(w) for w in _SPLIT.split(str(spelling)))
    for term in tx._glossary():  # noqa: SLF001
        terms.add(canonical(term))
        for word in _SPLIT.split(term):
            terms.add(canonical(word))  # single words of clinical terms ("lesion", "pancreas", "matter")
    terms.discard("")
    return frozenset(terms)


def canonical(value: str) -> str:
    """What all spellings of one value have in common (lower-case letters and digits), for its token."""
    return "".join(filter(str.isalnum, str(value).lower()))


def _name_parts(value: str) -> list[str]:
    """Real name parts of a ``family^given^middle^prefix^suffix`` person name (all component groups)."""
    parts: list[str] = []
    for group in value.split("="):
        for p in group.split("^"):
            p = p.strip()
            if p and not p.replace(" ", "").isdigit():
                parts.append(p)
    return parts


def variants(value: str) -> set[str]:
    """Spellings under which an identifying value may show up in paths and text (before protection)."""
    v = str(value).strip()
    out: set[str] = {v}
    if "^" in v:  # DICOM person name
        groups = [g for g in v.split("=") if g.strip()]
        for g in groups:
            parts = _name_parts(g)
            whole = [p for p in g.split("^") if p.strip()]
            for seq in (parts, whole):
                for sep in _SEPARATORS:
                    out.add(sep.join(seq))
                    out.add(sep.join(reversed(seq)))
            for p in parts:
                out.add(p)
                out.update(_joined(p))
        out.add(v.replace("^", " ").strip())
    for o in list(out):
        if not any(ch.isalpha() for ch in o):  # UIDs, numbers: only as written (dates get their spellings below)
            continue
        out.update(_joined(o))
        out.add(re.sub(r"['\-,.]", "", o))  # O'BRIEN -> OBRIEN, MARY-ANN -> MARYANN
    if re.fullmatch(r"(19|20)\d{6}(\d{6}(\.\d+)?)?([+-]\d{4})?", v):  # DA, or DT starting with a date
        out |= _date_variants(v[:8])
    return {o for o in out if o}


def _joined(value: str) -> set[str]:
    """A multi-word value with its words joined by each separator, in both orders."""
    words = [w for w in _SPLIT.split(value) if w]
    if len(words) < 2:
        return set()
    return {sep.join(seq) for sep in _SEPARATORS for seq in (words, words[::-1])}


def _is_letter(ch: str) -> bool:
    """A letter as the boundary rules see it: a word character that is neither a digit nor ``_``."""
    return ch.isalnum() and not ch.isdecimal()


def _before_ok(mode: str, text: str, start: int) -> bool:
    """Whether a spelling bounded by ``mode`` at its start may start at ``text[start]`` (module docstring)."""
    if mode == "letter":
        return start == 0 or not _is_letter(text[start - 1])
    if mode in ("digit", "number"):
        if start > 0 and text[start - 1].isdecimal():
            return False
        # "digit" (a UID, a date): not right after "<digit>." either, so no fragment of a longer UID matches
        return mode == "number" or not (start > 1 and text[start - 1] == "." and text[start - 2].isdecimal())
    if mode == "component":
        return start == 0 or text[start - 1] in "/\\"
    return True


def _after_ok(mode: str, text: str, end: int) -> bool:
    """Whether a spelling bounded by ``mode`` at its end may end right before ``text[end]``."""
    n = len(text)
    if mode == "letter":
        return end == n or not _is_letter(text[end])
    if mode in ("digit", "number"):
        if end < n and text[end].isdecimal():
            return False
        return mode == "number" or not (end + 1 < n and text[end] == "." and text[end + 1].isdecimal())
    if mode == "component":
        return end == n or text[end] in "/\\._-" or (end == n - 1 and text[end] == "\n")
    return True


def _mode(spelling: str) -> tuple[str, str]:
    """How a spelling is bounded at its start and end (see the module docstring for the rules)."""
    if _CJK.search(spelling):
        return "", ""
    if _DIGITS.fullmatch(spelling) and sum(map(str.isdigit, spelling)) < _SHORT_NUMBER:
        return "component", "component"
    first, last = spelling[0], spelling[-1]
    return ("digit" if first.isdigit() else "letter" if first.isalpha() else "",
            "digit" if last.isdigit() else "letter" if last.isalpha() else "")


def _fold_char(ch: str) -> str:
    folded = ch.casefold()
    if len(folded) == 1:
        return folded
    lower = ch.lower()
    return lower if len(lower) == 1 else ch


def fold(text: str) -> str:
    """Case-insensitive comparison form with one character per character (``casefold``, except that a
    character whose folding has several characters, such as ``ß``, keeps a one-character form), so that
    positions in the folded text are positions in the text."""
    folded = text.casefold()
    return folded if len(folded) == len(text) else "".join(_fold_char(ch) for ch in text)


_RUN = re.compile(r"[^\W\d_]+|\d+")  # maximal runs of letters, and of digits (the boundary rules' classes)
_NUMBER = re.compile(r"\d+(?:\.\d+)*")  # maximal numbers and dotted UIDs
_SLASH = re.compile(r"[/\\]")


def _occurrences(text: str, part: str) -> Iterator[int]:
    """Every start of ``part`` in ``text`` (overlapping ones too)."""
    i = text.find(part)
    while i >= 0:
        yield i
        i = text.find(part, i + 1)


class _Matcher:
    """Finds spellings in text by hashing, at a cost set by the text's length and not by the number of spellings.

    A match must satisfy its spelling's boundary modes, and those modes pin where it can start: a spelling
    that starts with a letter (digit) and may not follow one starts where a run of letters (digits) of the text
    starts, and that run is the spelling's own first run; so each run of the text is looked up once, and only
    the lengths of the spellings that begin with that run are tried. Numbers and dotted UIDs (most of the
    values of a DICOM folder) are whole numbers of the text: one lookup per number. Short numbers start a path
    component; other spellings (CJK, a leading symbol) are tried where the text has their first character.
    Of the matches, the earliest wins, the longest at one start; then the next that starts after it."""

    def __init__(self) -> None:
        self.info: dict[str, tuple[str, str, str]] = {}  # folded spelling -> (token, start mode, end mode)
        self.numbers: set[str] = set()  # folded spellings that are whole numbers / UIDs
        self._by_run: dict[str, set[int]] = {}  # first run of a spelling -> lengths of such spellings
        self._at_component: set[int] = set()
        self._by_char: dict[str, set[int]] = {}
        self._ready: tuple[dict[str, tuple[int, ...]], tuple[int, ...], dict[str, tuple[int, ...]],
                           re.Pattern[str] | None] | None = None

    def __bool__(self) -> bool:
        return bool(self.info)

    def add(self, key: str, token: str, before: str, after: str) -> None:
        """``key``: a folded spelling (the first added under one key keeps its token)."""
        if key in self.info:
            return
        self.info[key] = (token, before, after)
        self._ready = None
        first = key[0]
        if before == after == "digit" and _NUMBER.fullmatch(key):
            self.numbers.add(key)  # starts and ends a whole number of the text (the digit rules), nowhere else
        elif (before == "letter" and _is_letter(first)) or (before in ("digit", "number") and first.isdecimal()):
            run = _RUN.match(key)
            self._by_run.setdefault(run.group(), set()).add(len(key))  # type: ignore[union-attr]
        elif before == "component":
            self._at_component.add(len(key))
        else:
            self._by_char.setdefault(first, set()).add(len(key))

    def _prepared(self) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...], dict[str, tuple[int, ...]],
                                 re.Pattern[str] | None]:
        if self._ready is None:
            def desc(lengths: set[int]) -> tuple[int, ...]:
                return tuple(sorted(lengths, reverse=True))

            chars = "".join(sorted(self._by_char))
            self._ready = ({k: desc(v) for k, v in self._by_run.items()}, desc(self._at_component),
                           {k: desc(v) for k, v in self._by_char.items()},
                           re.compile("[" + re.escape(chars) + "]") if chars else None)
        return self._ready

    def _longest(self, text: str, folded: str, start: int, lengths: tuple[int, ...]) -> int:
        """End of the longest valid match among spellings of ``lengths`` starting at ``start`` (0: none)."""
        for n in lengths:
            end = start + n
            if end > len(text):
                continue
            hit = self.info.get(folded[start:end])
            if hit is not None and _before_ok(hit[1], text, start) and _after_ok(hit[2], text, end):
                return end
        return 0

    def spans(self, text: str, first_only: bool = False) -> list[tuple[int, int, str]]:
        """Non-overlapping matches (start, end, token), earliest first and the longest at one start."""
        if not self.info:
            return []
        by_run, at_component, by_char, char_rx = self._prepared()
        folded = fold(text)
        best: dict[int, int] = {}

        def found(start: int, end: int) -> None:
            if end > best.get(start, 0):
                best[start] = end

        # which numbers and runs of the text begin a spelling (found with C loops; usually none), then where
        for number in self.numbers.intersection(_NUMBER.findall(folded)) if self.numbers else ():
            for s in _occurrences(folded, number):
                if _before_ok("digit", text, s) and _after_ok("digit", text, s + len(number)):
                    found(s, s + len(number))
        for run in by_run.keys() & _RUN.findall(folded) if by_run else ():
            for s in _occurrences(folded, run):
                found(s, self._longest(text, folded, s, by_run[run]))
        if at_component:
            for s in [0, *(m.end() for m in _SLASH.finditer(text))]:
                found(s, self._longest(text, folded, s, at_component))
        if char_rx is not None:
            for m in char_rx.finditer(folded):
                found(m.start(), self._longest(text, folded, m.start(), by_char[m.group()]))
        out: list[tuple[int, int, str]] = []
        pos = 0
        for start in sorted(best):
            end = best[start]
            if end and start >= pos:
                out.append((start, end, self.info[folded[start:end]][0]))
                if first_only:
                    break
                pos = end
        return out


def _long_enough(spelling: str) -> bool:
    if _DIGITS.fullmatch(spelling):
        return sum(map(str.isdigit, spelling)) >= 2
    return len(spelling) >= _MIN_LEN


class Scrubber:
    """Replaces identifying values (and their spellings) in strings and nested lists/dicts.

    ``protected``: extra words/phrases that are never targets (e.g. a source's label vocabulary), on top of
    the taxonomy. ``count`` is the number of strings this scrubber has changed. Building one costs time in
    proportion to the number of values; scrubbing a string, in proportion to its length (:class:`_Matcher`)."""

    def __init__(self, values: Iterable[str | None], key: str = "", protected: Iterable[str] = ()):
        given = sorted({str(v).strip() for v in values if v is not None and str(v).strip()})
        own = {canonical(p) for p in protected if p} if given else set()
        taxonomy = _taxonomy_terms() if given else frozenset()
        self._match = _Matcher()
        # short numbers only match as path components when scrubbing; `contains(strict=True)` finds them in text
        # (two-digit values are not looked for in text: "12" in "follow-up 12 months" identifies no one)
        self._strict = _Matcher()
        # sorted, and tokens of canonical forms: the same values give the same tokens in any process
        for v in given:
            tok = self._token(canonical(v), key)
            for var in sorted(variants(v)):
                c = canonical(var)
                if _long_enough(var) and c not in taxonomy and c not in own:
                    folded = fold(var)
                    self._match.add(folded, tok, *_mode(folded))
                    if _DIGITS.fullmatch(folded) and 3 <= sum(map(str.isdigit, folded)) < _SHORT_NUMBER:
                        self._strict.add(folded, tok, "number", "number")
        self.count = 0

    @property
    def values(self) -> list[str]:
        """Every spelling looked for (case-folded), longest first."""
        return sorted(self._match.info, key=lambda s: (-len(s), s))

    @staticmethod
    def _token(value: str, key: str) -> str:
        mac = hmac.new(key.encode("utf-8"), value.lower().encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{REDACTED}-{mac[:6]}"

    def __bool__(self) -> bool:
        return bool(self._match)

    def _sub(self, text: str) -> str:
        spans = self._match.spans(text)
        if not spans:
            return text
        parts, pos = [], 0
        for start, end, token in spans:
            parts += [text[pos:start], token]
            pos = end
        parts.append(text[pos:])
        self.count += 1
        return "".join(parts)

    def contains(self, text: str, strict: bool = True) -> bool:
        """True when ``text`` holds any identifying value in any spelling this scrubber knows. ``strict``
        (for deciding whether free text may be copied at all): short numbers count anywhere as a number too."""
        if self._match.spans(text, first_only=True):
            return True
        return strict and bool(self._strict.spans(text, first_only=True))

    def __call__(self, obj: Any) -> Any:
        if not self._match:
            return obj
        if isinstance(obj, str):
            return self._sub(obj)
        if isinstance(obj, list):
            return [self(o) for o in obj]
        if isinstance(obj, tuple):
            return tuple(self(o) for o in obj)
        if isinstance(obj, dict):
            return {self(k): self(v) for k, v in obj.items()}
        return obj
