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

How a spelling matches (case-insensitively): it must not continue a word of its own kind at either end: a
spelling that starts with a letter must not follow a letter, one that starts with a digit must not follow a
digit (and likewise at its end), so ``DOE`` matches in ``Doe_John`` and ``doejohn2001`` but not in
``Doerr``; a dotted UID never matches inside a longer UID. Spellings in CJK scripts match anywhere. Short
numbers (fewer than 5 digits, e.g. a PatientID ``125``) match only as a whole path component or at its start
(``125/``, ``125_ct.png``), never inside free text such as "lesion 125 mm"; but free text that holds one of
3-4 digits anywhere is not copied from a header at all (:meth:`Scrubber.contains` with ``strict``). Values
shorter than 3 characters (2 for numbers) are left alone."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
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
    return "".join(ch for ch in str(value).lower() if ch.isalnum())


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


_BEFORE = {"letter": r"(?<![^\W\d_])", "digit": r"(?<!\d)(?<!\d\.)", "": "", "component": r"(?:(?<=[/\\])|^)"}
_AFTER = {"letter": r"(?![^\W\d_])", "digit": r"(?!\d)(?!\.\d)", "": "", "component": r"(?=$|[/\\._\-])"}


def _mode(spelling: str) -> tuple[str, str]:
    """How a spelling is bounded at its start and end (see the module docstring for the rules)."""
    if _CJK.search(spelling):
        return "", ""
    if _DIGITS.fullmatch(spelling) and sum(ch.isdigit() for ch in spelling) < _SHORT_NUMBER:
        return "component", "component"
    first, last = spelling[0], spelling[-1]
    return ("digit" if first.isdigit() else "letter" if first.isalpha() else "",
            "digit" if last.isdigit() else "letter" if last.isalpha() else "")


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex for many literal words, as a trie (shared prefixes written once; a longer word is tried before
    its prefix), so matching costs about the length of the text, not the number of words."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        alts = [re.escape(ch) + emit(node[ch]) for ch in sorted(k for k in node if k)]
        if not alts:
            return ""
        if len(alts) == 1 and "" not in node:
            return alts[0]
        return "(?:" + "|".join(alts) + ")" + ("?" if "" in node else "")

    return emit(trie)


def _long_enough(spelling: str) -> bool:
    if _DIGITS.fullmatch(spelling):
        return sum(ch.isdigit() for ch in spelling) >= 2
    return len(spelling) >= _MIN_LEN


class Scrubber:
    """Replaces identifying values (and their spellings) in strings and nested lists/dicts.

    ``protected``: extra words/phrases that are never targets (e.g. a source's label vocabulary), on top of
    the taxonomy. ``count`` is the number of strings this scrubber has changed."""

    def __init__(self, values: Iterable[str | None], key: str = "", protected: Iterable[str] = ()):
        token: dict[str, str] = {}
        given = sorted({str(v).strip() for v in values if v is not None and str(v).strip()})
        own = {canonical(p) for p in protected if p} if given else set()
        taxonomy = _taxonomy_terms() if given else frozenset()
        # sorted, and tokens of canonical forms: the same values give the same tokens in any process
        for v in given:
            tok = self._token(canonical(v), key)
            for var in sorted(variants(v)):
                c = canonical(var)
                if _long_enough(var) and c not in taxonomy and c not in own:
                    token.setdefault(var.lower(), tok)
        self._token_of = token
        # short numbers only match as path components when scrubbing; `contains(strict=True)` finds them in text
        # (two-digit values are not looked for in text: "12" in "follow-up 12 months" identifies no one)
        self._short = sorted({v for v in token if _DIGITS.fullmatch(v)
                              and 3 <= sum(c.isdigit() for c in v) < _SHORT_NUMBER})
        self._strict_rx: re.Pattern[str] | None = None
        # longest first so "DOE JOHN" goes before "DOE"
        self.values = sorted(token, key=lambda s: (-len(s), s))
        self._groups: list[re.Pattern[str]] | None = None
        self.count = 0

    @staticmethod
    def _token(value: str, key: str) -> str:
        mac = hmac.new(key.encode("utf-8"), value.lower().encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{REDACTED}-{mac[:6]}"

    def __bool__(self) -> bool:
        return bool(self.values)

    def _compiled(self) -> list[re.Pattern[str]]:
        """One trie regex per boundary mode (a handful), compiled on first use."""
        if self._groups is None:
            by_mode: dict[tuple[str, str], list[str]] = {}
            for v in self.values:
                by_mode.setdefault(_mode(v), []).append(v)
            self._groups = [re.compile(_BEFORE[b] + "(?:" + _trie_pattern(words) + ")" + _AFTER[a], re.IGNORECASE)
                            for (b, a), words in sorted(by_mode.items())]
        return self._groups

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Non-overlapping matches of every mode, earliest first and the longest at one start."""
        found = sorted((m.start(), -m.end()) for rx in self._compiled() for m in rx.finditer(text)
                       if m.end() > m.start())
        out: list[tuple[int, int]] = []
        for start, neg_end in found:
            if not out or start >= out[-1][1]:
                out.append((start, -neg_end))
        return out

    def _lookup(self, matched: str) -> str:
        tok = self._token_of.get(matched.lower())
        if tok is None:  # a case mapping that changes length (rare scripts): compare case-folded
            folded = matched.casefold()
            tok = next(t for v, t in self._token_of.items() if v.casefold() == folded)
        return tok

    def _sub(self, text: str) -> str:
        spans = self._spans(text)
        if not spans:
            return text
        parts, pos = [], 0
        for start, end in spans:
            parts += [text[pos:start], self._lookup(text[start:end])]
            pos = end
        parts.append(text[pos:])
        self.count += 1
        return "".join(parts)

    def contains(self, text: str, strict: bool = True) -> bool:
        """True when ``text`` holds any identifying value in any spelling this scrubber knows. ``strict``
        (for deciding whether free text may be copied at all): short numbers count anywhere as a number too."""
        if not self.values:
            return False
        if any(rx.search(text) for rx in self._compiled()):
            return True
        if strict and self._short:
            if self._strict_rx is None:
                self._strict_rx = re.compile(r"(?<!\d)(?:" + _trie_pattern(self._short) + r")(?!\d)")
            return self._strict_rx.search(text) is not None
        return False

    def __call__(self, obj: Any) -> Any:
        if not self.values:
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
