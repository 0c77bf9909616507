"""``llava-med``: LLaVA-Med's VQA scoring.

Both sides are normalized (lower case, punctuation to spaces, articles dropped, number words to digits).

closed, gold yes/no (English, or SLAKE's Chinese forms mapped to "yes"/"no"), and closed items whose gold
is hidden: the toolkit's rule as the spec states it -- correct iff the reply *mentions* "yes" or "no"
AND contains the gold ("yes"/"no") as a substring. Both tests are plain substring tests, so "nodule"
and "not" count as a mention of "no" and "yes and no" is right for either gold (toolkit quirks kept). A
reply that mentions neither is unparsed (rule ``no_yes_no_mention``), also when it is Chinese (是 / 没有
are not "yes" / "no" to this toolkit).

closed, gold not yes/no (SLAKE "Coronal Plane", "MRI"): there is no yes/no to mention, so the mention
test is not applied; correct iff the normalized reply contains the normalized gold as a substring (rule
``gold_substring``). Negations and alternatives are not recognised, as in the toolkit: "not the coronal
plane" and "coronal plane or axial plane" are both correct under this scorer (medvl's own scorer
rejects them).

open: score = token recall (shared tokens counted with multiplicity / gold tokens); correct iff recall
is 1.0; F1 and precision in ``detail``. mc falls back to ``medvl``."""

from __future__ import annotations

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import gold_yes_no, normalize_answer, token_scores
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


@SCORERS.register("llava-med")
class LlavaMedScorer(Scorer):
    description = ("LLaVA-Med: closed yes/no gold = reply mentions yes/no AND contains the gold (substrings); "
                   "closed other gold = gold substring, no mention needed; open = token recall")
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
