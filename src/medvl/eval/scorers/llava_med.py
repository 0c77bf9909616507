"""``llava-med``: LLaVA-Med's VQA scoring.

Both sides are normalized (lower case, punctuation to spaces, articles dropped, number words to digits).
closed with a yes/no gold: correct iff the reply mentions "yes" or "no" (plain substrings, so "nodule"
and "not" count as a mention: toolkit quirk) and contains the gold as a substring; a reply mentioning
neither is unparsed. closed with another gold: correct iff the reply contains the gold.
open: score = token recall (shared tokens counted with multiplicity / gold tokens); correct iff recall
is 1.0; F1 and precision in ``detail``. mc falls back to ``medvl``."""

from __future__ import annotations

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import gold_yes_no, normalize_answer, token_scores
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


@SCORERS.register("llava-med")
class LlavaMedScorer(Scorer):
    description = "LLaVA-Med: closed = yes/no mention + gold substring; open = token recall"
    supports = ("closed", "open")

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        pred = normalize_answer(reply)
        gold = normalize_answer(item.answer) if item.answer is not None else ""
        polarity = gold_yes_no(item.answer)
        if polarity is not None:
            gold = polarity
        if polarity is not None or item.answer is None:
            if "yes" not in pred and "no" not in pred:
                return make_result(item, None, False, "no_yes_no_mention")
            return make_result(item, pred, bool(gold) and gold in pred, "yes_no_substring")
        return make_result(item, pred or None, bool(gold) and gold in pred, "gold_substring")

    def score_open(self, item: EvalItem, reply: str) -> ScoreResult:
        pred = normalize_answer(reply)
        if item.answer is None:
            return make_result(item, pred or None, False, "hidden_gold")
        s = token_scores(pred, normalize_answer(item.answer))
        return make_result(item, pred or None, s["recall"] >= 1.0, "token_recall", score=s["recall"],
                           precision=s["precision"], recall=s["recall"], f1=s["f1"])
