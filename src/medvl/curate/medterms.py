"""Counting medical terms in text: the vocabulary behind PubMedVision's text filter (an item whose caption names
fewer than 5 medical terms is dropped).

The shipped vocabulary (``data/medical_terms_en.txt``) is MeSH descriptor names and their words plus medvl's
imaging vocabulary, with common English words removed; its header names the sources, versions and licences, and
``tools/make_medical_vocabulary.py`` regenerates it. Any UTF-8 file with one term per line (``#`` comments) can
replace it: ``load_vocabulary(path)``.

Matching: case-insensitive, on whole words (text and terms are split into words at anything that is not a letter
or digit, so "X-ray" matches "x ray" and "x-ray"), multi-word terms first (greedy, longest match wins from left to
right), regular English plurals folded ("lesions" = "lesion", "arteries" = "artery", "metastases" =
"metastasis", "vertebrae" = "vertebra"). A dictionary of word tuples is probed at each position, at most as many
times as the longest term has words, so a caption costs a few microseconds per word whatever the vocabulary size.
:meth:`MedicalVocabulary.terms` lists the distinct terms found, in order of first occurrence;
:meth:`MedicalVocabulary.count` is their number (repeating a word does not raise it)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

DEFAULT_VOCABULARY = Path(__file__).parent / "data" / "medical_terms_en.txt"
_WORD = re.compile(r"[^\W_]+")


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used; the message names the file and the problem."""


def fold(word: str) -> str:
    """The comparison form of one lower-case word: regular plurals folded onto the singular (applied to the text
    and to the vocabulary alike, so only consistency matters)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"  # arteries -> artery
    if word.endswith("sis"):
        return word[:-3] + "se"  # metastasis, metastases -> metastase
    if word.endswith("uses"):
        return word[:-2]  # viruses -> virus
    if word.endswith("ae") and len(word) > 4:
        return word[:-1]  # vertebrae -> vertebra
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]  # lesions -> lesion, metastases -> metastase
    return word


def words(text: str) -> list[str]:
    """The words of a text, lower-cased (Unicode letters and digits; everything else separates)."""
    return _WORD.findall(text.casefold())


class MedicalVocabulary:
    """A set of medical terms matched in text (see the module docstring)."""

    def __init__(self, terms: Iterable[str], source: str = "<memory>"):
        self.source = source
        self._terms: dict[tuple[str, ...], str] = {}  # folded word tuple -> the term as listed
        self._prefixes: set[tuple[str, ...]] = set()  # proper prefixes of multi-word terms (stop probing early)
        for term in terms:
            key = tuple(fold(w) for w in words(term))
            if not key:
                continue
            self._terms.setdefault(key, term.strip())
            for i in range(1, len(key)):
                self._prefixes.add(key[:i])
        self.max_words = max((len(k) for k in self._terms), default=0)

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: str) -> bool:
        return tuple(fold(w) for w in words(term)) in self._terms

    def matches(self, text: str) -> list[str]:
        """Every occurrence of a term in ``text``, left to right, longest match first (as listed in the
        vocabulary)."""
        seq = [fold(w) for w in words(text)]
        out: list[str] = []
        i, n = 0, len(seq)
        terms, prefixes = self._terms, self._prefixes
        while i < n:
            best, j, key = 0, i, ()
            while j < n and j - i < self.max_words:
                key = key + (seq[j],)
                j += 1
                if key in terms:
                    best = j - i
                if key not in prefixes:
                    break
            if best:
                out.append(terms[tuple(seq[i:i + best])])
                i += best
            else:
                i += 1
        return out

    def terms(self, text: str) -> list[str]:
        """The distinct terms found in ``text``, in order of first occurrence."""
        return list(dict.fromkeys(self.matches(text)))

    def count(self, text: str) -> int:
        """How many distinct terms ``text`` names."""
        return len(self.terms(text))


def read_terms(path: Path) -> list[str]:
    """Terms of a vocabulary file: one per line, blank lines and ``#`` comment lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabularyError(f"{path}: vocabulary file not found") from None
    except UnicodeDecodeError as e:
        raise VocabularyError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise VocabularyError(f"{path}: cannot read ({e.strerror})") from None
    terms = [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]
    if not terms:
        raise VocabularyError(f"{path}: vocabulary has no terms (one term per line; # starts a comment)")
    return terms


@lru_cache(maxsize=8)
def _load(path: str) -> MedicalVocabulary:
    return MedicalVocabulary(read_terms(Path(path)), source=path)


def load_vocabulary(path: str | Path | None = None) -> MedicalVocabulary:
    """The vocabulary in ``path`` (None: the one shipped with medvl), loaded once per process and path."""
    p = Path(path).expanduser() if path else DEFAULT_VOCABULARY
    return _load(str(p.resolve()))
