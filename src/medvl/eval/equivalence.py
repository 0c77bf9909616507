"""When two short answers say the same thing, for medvl's open-answer matching (``parse.match_open``).

- numbers are written one way (``canonical_answer``): thousands separators dropped ("1,000" = "1000"),
  trailing decimal zeros dropped ("6.40" = "6.4"), a proper fraction with a finite decimal written as that
  decimal ("1/2" = "0.5", "3/4" = "0.75"; "1/3", "120/80" stay as written); decimal points survive;
- one word may differ in grammatical number ("kidney" = "kidneys", "vertebra" = "vertebrae"), never two, and
  never a number word ("1 nodule" is not "2 nodules");
- imaging modalities are matched through ``medvl.taxonomy.normalize_modality`` ("MR" = "MRI" = "magnetic
  resonance imaging", "computed tomography" = "CT", "磁共振" = "核磁共振"), except spellings listed in
  ``answer_vocab.yaml`` ``modality_specific`` (sequences and sub-techniques such as "T2" or "mammography":
  a "T2" gold is not answered by "MRI"), which match only themselves. A two-letter modality acronym inside
  a longer reply counts only when written in capitals ("US", not "shows us").

Pure functions on strings; the vocabularies live in ``eval/data/answer_vocab.yaml``."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

from medvl.eval.scorers._text import ARTICLES, NUMBER_WORDS, SPELLING_VARIANTS, VOCAB, has_cjk
from medvl.taxonomy import normalize_modality

_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,]|\.\d)")
_FRACTION = re.compile(r"(?<![\w./])(\d+)\s*/\s*(\d+)(?![\w/]|\.\d)")
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w]|\.\d)")
_PUNCT = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_")  # every punctuation mark but a decimal point
_SPACES = re.compile(r"\s+")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_PLURAL = VOCAB["plural"]
_IRREGULAR = {str(k): str(v) for k, v in _PLURAL["irregular"].items()}
_NOT_INFLECTED = frozenset(_PLURAL["never_inflected"])
MAX_MODALITY_WORDS = 4


def _decimal_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def _fraction_text(m: re.Match[str]) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if not 0 < num < den:  # only proper fractions: "120/80" and "20/20" are no fractions
        return m.group(0)
    frac = Fraction(num, den)
    d = frac.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:  # no finite decimal (1/3): keep the fraction
        return m.group(0)
    return _decimal_text(Decimal(frac.numerator) / Decimal(frac.denominator))


def canonical_numbers(text: str) -> str:
    """``text`` with numbers written one way: "1,000" -> "1000", "6.40" -> "6.4", "1/2" -> "0.5"."""
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _FRACTION.sub(_fraction_text, text)

    def dec(m: re.Match[str]) -> str:
        try:
            return _decimal_text(Decimal(m.group(0)))
        except InvalidOperation:
            return m.group(0)

    return _DECIMAL.sub(dec, text)


@lru_cache(maxsize=65536)
def canonical_answer(text: str) -> str:
    """NFKC, lower case, numbers canonical (``canonical_numbers``), punctuation to spaces except a decimal
    point, English articles dropped, number words as digits, spelling variants unified ("x-ray" -> "xray")."""
    flat = canonical_numbers(unicodedata.normalize("NFKC", text).lower())
    flat = _SPACES.sub(" ", _PUNCT.sub(" ", flat)).strip()
    words = [NUMBER_WORDS.get(w, w) for w in flat.split(" ") if w and w not in ARTICLES]
    joined = " ".join(words)
    for pattern, canonical in SPELLING_VARIANTS:
        joined = pattern.sub(canonical, joined)
    return joined


def as_number(text: str) -> float | None:
    """The value of a canonical answer that is one number ("1000", "6.4"), else None."""
    try:
        return float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------ plurals

@lru_cache(maxsize=65536)
def plurals(word: str) -> frozenset[str]:
    """The regular and listed plural forms of an English noun (candidates; non-words are harmless)."""
    if len(word) < 3 or not word.isalpha() or not word.isascii() or word in _NOT_INFLECTED:
        return frozenset()
    out = {word + "s", word + "es"}
    if word.endswith("y") and word[-2] not in "aeiou":
        out.add(word[:-1] + "ies")
    if word.endswith("is"):
        out.add(word[:-2] + "es")  # metastasis -> metastases
    if word.endswith("us"):
        out.add(word[:-2] + "i")  # bronchus -> bronchi
    if word.endswith("a"):
        out.add(word + "e")  # vertebra -> vertebrae
    if word.endswith(("um", "on")):
        out.add(word[:-2] + "a")  # ovum -> ova, criterion -> criteria
    if word.endswith(("ex", "ix")):
        out.add(word[:-2] + "ices")  # cortex -> cortices, appendix -> appendices
    if word in _IRREGULAR:
        out.add(_IRREGULAR[word])
    return frozenset(out)


def same_word(a: str, b: str) -> bool:
    """``a`` and ``b`` are one word, possibly one in the singular and the other in the plural."""
    return a == b or b in plurals(a) or a in plurals(b)


def same_words(a: list[str], b: list[str]) -> bool:
    """Equal word lists, except that at most one word may differ in grammatical number."""
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return not diff or (len(diff) == 1 and same_word(a[diff[0]], b[diff[0]]))


# ------------------------------------------------------------------------------------------ modalities

_SPECIFIC = frozenset(re.sub(r"[^a-z0-9\u3400-\u9fff]", "", str(s).lower()) for s in VOCAB["modality_specific"])


def modality_of(answer: str) -> str | None:
    """The taxonomy modality a whole (canonical) answer names as a whole ("mri" -> "MR"), or None when it
    names none or names a sequence / sub-technique listed in ``modality_specific`` ("t2")."""
    key = re.sub(r"[^a-z0-9\u3400-\u9fff]", "", answer.lower())
    if len(key) < 2 or key in _SPECIFIC:  # one letter is no modality name ("c" in "hepatitis c")
        return None
    return normalize_modality(answer)


def same_modality(a: str, b: str) -> bool:
    """Two whole answers name the same modality ("mr" and "mri", "computed tomography" and "ct")."""
    ka = modality_of(a)
    return ka is not None and ka == modality_of(b)


def modality_mentions(pred: str, raw: str, key: str) -> list[tuple[int, int]]:
    """(start, end) character spans in ``pred`` (canonical) that name modality ``key`` in words: runs of up to
    ``MAX_MODALITY_WORDS`` words, or Chinese substrings. A two-letter acronym ("us", "mr") counts only when
    ``raw`` (the reply as written) has it in capitals. Overlapping spans keep the longest."""
    spans: list[tuple[int, int]] = []
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", pred)]
    capitals = set(re.findall(r"\b[A-Z]{2}\b", raw))
    for i in range(len(words)):
        for n in range(MAX_MODALITY_WORDS, 0, -1):
            if i + n > len(words):
                continue
            a, b = words[i][0], words[i + n - 1][1]
            text = pred[a:b]
            if n == 1 and len(text) <= 2 and text.upper() not in capitals:
                continue
            if modality_of(text) == key:
                spans.append((a, b))
                break
    for m in _CJK_RUN.finditer(pred):
        run = m.group(0)
        for length in range(len(run), 1, -1):
            for s in range(0, len(run) - length + 1):
                if modality_of(run[s:s + length]) == key:
                    spans.append((m.start() + s, m.start() + s + length))
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[tuple[int, int]] = []
    for s in spans:
        if not any(s[0] < k[1] and k[0] < s[1] for k in kept):
            kept.append(s)
    return kept


def word_spans(pred: str, ref: str) -> list[tuple[int, int]]:
    """(start, end) spans in ``pred`` where the words of ``ref`` occur, one word possibly in the other
    grammatical number ("renal cysts" for "renal cyst"); Chinese ``ref`` by substring."""
    if has_cjk(ref):
        return [(m.start(), m.end()) for m in re.finditer(re.escape(ref), pred)]
    want = ref.split()
    words = [(m.start(), m.end(), m.group(0)) for m in re.finditer(r"\S+", pred)]
    out = []
    for i in range(len(words) - len(want) + 1):
        window = words[i:i + len(want)]
        if same_words([w[2] for w in window], want):
            out.append((window[0][0], window[-1][1]))
    return out
