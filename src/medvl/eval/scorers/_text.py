"""Text normalization shared by the answer extractor and the scorers (word lists in
``eval/data/answer_vocab.yaml``). Pure functions on strings; no scorer logic here."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from medvl.core.yamlio import load_data_yaml

VOCAB: dict[str, Any] = load_data_yaml(
    (Path(__file__).resolve().parent.parent / "data" / "answer_vocab.yaml").read_text(encoding="utf-8")
)

_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")
_MARKDOWN = re.compile(r"[*_`#]+")

ARTICLES = frozenset(VOCAB["articles"])
NUMBER_WORDS: dict[str, str] = {str(k): str(v) for k, v in VOCAB["number_words"].items()}
SPELLING_VARIANTS = [(re.compile(k), v) for k, v in sorted(VOCAB["spelling_variants"].items())]
GOLD_YES = frozenset(VOCAB["gold_yes"])
GOLD_NO = frozenset(VOCAB["gold_no"])


def has_cjk(text: str) -> bool:
    """True when ``text`` contains a CJK ideograph."""
    return _CJK.search(text) is not None


def strip_markdown(text: str) -> str:
    """``text`` without markdown emphasis / code marks (``**B**`` -> ``B``)."""
    return _MARKDOWN.sub("", text)


def normalize(text: str) -> str:
    """NFKC, lower case, every punctuation mark (ASCII and CJK) to a space, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACES.sub(" ", _PUNCT.sub(" ", text)).strip()


@lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """``normalize`` plus: English articles dropped, number words as digits, spelling variants unified
    ("X-ray" / "x ray" / "Xray" -> "xray") (open-answer comparison)."""
    words = [NUMBER_WORDS.get(w, w) for w in normalize(text).split(" ") if w and w not in ARTICLES]
    joined = " ".join(words)
    for pattern, canonical in SPELLING_VARIANTS:
        joined = pattern.sub(canonical, joined)
    return joined


def tokens(text: str) -> list[str]:
    """Word tokens of normalized text; each CJK ideograph is a token of its own."""
    return _TOKEN.findall(text)


def token_scores(pred_norm: str, gold_norm: str) -> dict[str, float]:
    """Precision, recall and F1 of shared tokens counted with multiplicity (inputs already normalized)."""
    p, g = tokens(pred_norm), tokens(gold_norm)
    if not p or not g:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    common = sum((Counter(p) & Counter(g)).values())
    precision, recall = common / len(p), common / len(g)
    f1 = 0.0 if common == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1}


def contains_words(haystack_norm: str, needle_norm: str) -> bool:
    """``needle`` occurs in ``haystack`` as whole words (plain substring when the needle is Chinese)."""
    if not needle_norm:
        return False
    if has_cjk(needle_norm):
        return needle_norm in haystack_norm
    return f" {needle_norm} " in f" {haystack_norm} "


def gold_yes_no(gold: str | None) -> str | None:
    """"yes" / "no" when a closed gold answer means yes / no (English or SLAKE's Chinese forms), else None."""
    if gold is None:
        return None
    g = normalize(gold).replace(" ", "") if has_cjk(gold) else normalize(gold)
    if g in GOLD_YES:
        return "yes"
    if g in GOLD_NO:
        return "no"
    return None


_REFUSALS_EN = tuple(VOCAB["refusals"]["en"])
_REFUSALS_ZH = tuple(VOCAB["refusals"]["zh"])


def is_refusal(text: str) -> str | None:
    """The refusal phrase found in ``text`` (either language), or None."""
    low = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    for phrase in _REFUSALS_EN:
        if phrase in low:
            return phrase
    for phrase in _REFUSALS_ZH:
        if phrase in low:
            return phrase
    return None


def word_regex(words: list[str]) -> re.Pattern[str]:
    """A case-insensitive regex matching any of ``words`` as whole words (longest first)."""
    def bounded(w: str) -> str:  # word boundaries only where the phrase starts / ends with a word character
        head = r"(?<![\w'])" if re.match(r"\w", w) else ""
        tail = r"(?![\w'])" if re.search(r"\w$", w) else ""
        return head + re.escape(w) + tail

    alts = "|".join(bounded(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(f"(?:{alts})", re.IGNORECASE)
