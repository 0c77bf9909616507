"""``lmms-slake``: lmms-eval's SLAKE / VQA-RAD exact match.

Both reply and gold: lower-case, strip, delete parenthesised parts ``(...)`` / ``（...）``, ASCII and CJK
punctuation to spaces, collapse spaces; the whole string ``x ray`` / ``xray`` becomes ``xray``; whole-string
yes/no synonyms are mapped (English yes/yeah/yep/true, no/nope/false; Chinese 是/是的/有/包含/可以/能/会/正常
-> yes, 否/不是/没有/无/不包含/不能/不会/不可以/不正常/异常 -> no). Correct iff the two strings are equal,
so "yes, it is" is wrong. Used for closed and open items; mc falls back to ``medvl``."""

from __future__ import annotations

import re

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.types import SCORERS, EvalItem, ScoreResult
from medvl.eval.scorers._text import VOCAB

_PARENS = re.compile(r"\([^()]*\)|（[^（）]*）")
_PUNCT = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")
_SYN = {w: "yes" for w in VOCAB["lmms_slake"]["yes"]} | {w: "no" for w in VOCAB["lmms_slake"]["no"]}


def slake_normalize(text: str) -> str:
    """lmms-eval SLAKE normalization of one answer string."""
    s = _PARENS.sub(" ", text.lower().strip())
    s = _SPACES.sub(" ", _PUNCT.sub(" ", s)).strip()
    if s in ("x ray", "xray"):
        return "xray"
    return _SYN.get(s, s)


@SCORERS.register("lmms-slake")
class LmmsSlakeScorer(Scorer):
    description = "lmms-eval SLAKE exact match after normalization and whole-string yes/no synonyms"
    supports = ("closed", "open")

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        pred = slake_normalize(reply)
        gold = slake_normalize(item.answer) if item.answer is not None else None
        return make_result(item, pred or None, pred == gold, "exact_match")

    score_open = score_closed
