"""Question-text overlap between training questions and benchmark questions.

Texts are normalized (``<image>`` / ``<box>`` / ``<ref>`` tags removed, lower-cased, punctuation to
spaces); tokens are words, and single characters for CJK scripts. Two kinds of match:
- ``exact``: equal normalized texts (at least ``min_exact_tokens`` tokens);
- ``ngram``: at least ``min_overlap`` of a benchmark question's token n-grams occur in one training
  question (containment, so a benchmark question pasted inside a longer prompt is found). Candidates come
  from an inverted index over the benchmark n-grams; n-grams shared by more than ``max_df`` benchmark
  questions are not used to find candidates (they are still counted in the overlap)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

_TAGS = re.compile(r"<image>|</?ref>|<box>.*?</box>|<\|[^>]*\|>", re.S)
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.U)


def normalize_question(text: str) -> str:
    """Lower-cased tokens joined by single spaces, with image / box / ref tags removed."""
    return " ".join(_TOKEN.findall(_TAGS.sub(" ", str(text)).lower()))


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class TextMatch:
    """A training text (index into the unique normalized training texts) matching a benchmark text."""

    train: int
    bench: int
    kind: str  # "exact" or "ngram"
    overlap: float  # share of the benchmark question's n-grams found in the training text (1.0 for exact)


def match_questions(train: Sequence[str], bench: Sequence[str], n: int = 3, min_overlap: float = 0.8,
                    min_ngram_tokens: int = 5, min_exact_tokens: int = 3, max_df: int = 200) -> list[TextMatch]:
    """Matches between normalized training texts and normalized benchmark texts, sorted by (train, bench)."""
    exact: dict[str, list[int]] = defaultdict(list)
    bench_grams: list[set[tuple[str, ...]]] = []
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for bi, text in enumerate(bench):
        toks = text.split()
        if len(toks) >= min_exact_tokens:
            exact[text].append(bi)
        grams = ngrams(toks, n) if len(toks) >= min_ngram_tokens else set()
        bench_grams.append(grams)
        for g in grams:
            index[g].append(bi)
    found: dict[tuple[int, int], TextMatch] = {}
    for ti, text in enumerate(train):
        for bi in exact.get(text, []):
            found[(ti, bi)] = TextMatch(ti, bi, "exact", 1.0)
        toks = text.split()
        if len(toks) < n:
            continue
        grams = ngrams(toks, n)
        hits: Counter = Counter()
        for g in grams:
            post = index.get(g)
            if post and len(post) <= max_df:
                hits.update(post)
        for bi in sorted(hits):
            if (ti, bi) in found:
                continue
            bg = bench_grams[bi]
            share = len(bg & grams) / len(bg)
            if share >= min_overlap:
                found[(ti, bi)] = TextMatch(ti, bi, "ngram", round(share, 4))
    return [found[k] for k in sorted(found)]
