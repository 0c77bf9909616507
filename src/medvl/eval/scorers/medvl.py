"""The ``medvl`` scorer (default): conservative rule-based extraction that never guesses.

- mc: ``parse.extract_choice``; correct iff the chosen letter is the gold letter;
- closed with a yes/no gold (English or SLAKE Chinese forms): ``parse.extract_yes_no`` vs the gold;
- closed with another gold ("Coronal Plane") and open: correct iff the normalized reply equals the gold or
  contains it as whole words; ``score`` is the token recall (precision/F1 in ``detail``)."""

from __future__ import annotations

from medvl.eval.parse import extract_choice, extract_yes_no, match_open
from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import gold_yes_no, is_refusal
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


@SCORERS.register("medvl")
class MedvlScorer(Scorer):
    description = "medvl rules: letter/option-text/marker extraction, negation-aware yes/no, no guessing"

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = extract_choice(reply, item.options, item.lang)
        return make_result(item, letter, letter is not None and letter == item.answer, rule)

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        polarity = gold_yes_no(item.answer)
        if polarity is None and item.answer is not None:
            return self.score_open(item, reply)
        label, rule = extract_yes_no(reply, item.lang)
        return make_result(item, label, label is not None and label == polarity, rule)

    def score_open(self, item: EvalItem, reply: str) -> ScoreResult:
        if item.answer is None:
            m = match_open(reply, "")
            return make_result(item, m["parsed"], False, "hidden_gold")
        if is_refusal(reply):
            return make_result(item, None, False, "refusal")
        m = match_open(reply, item.answer)
        rule = "exact" if m["exact"] else ("contained" if m["contained"] else "no_match")
        ok = m["exact"] or m["contained"]
        return make_result(item, m["parsed"], ok, rule, score=m["recall"], unparsed=m["parsed"] is None,
                           precision=m["precision"], recall=m["recall"], f1=m["f1"])
