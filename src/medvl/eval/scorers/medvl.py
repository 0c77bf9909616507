"""The ``medvl`` scorer (default): conservative rule-based extraction that never guesses.

- mc: ``parse.extract_choice``; correct iff the chosen letter is the gold letter; a yes/no item posed as
  options A = yes, B = no (``closed_as_mc``) is read with ``parse.extract_yes_no`` first (yes -> A, no -> B)
  and with ``extract_choice`` only for a letter;
- closed with a yes/no gold (English or SLAKE Chinese forms): ``parse.extract_yes_no`` vs the gold;
- closed with another gold ("Coronal Plane") and open: correct iff the normalized reply equals the gold or
  contains it as whole words (equal forms: "1,000" = "1000", "6.40" = "6.4", "1/2" = "0.5", one word's
  singular/plural, taxonomy modality synonyms "MR" = "MRI"; see ``eval/equivalence.py``), where a negated gold ("not the coronal plane" -> rule ``negated``) and a gold
  offered next to alternatives ("coronal plane or axial plane", "either X or Y", "X或Y", "X还是Y" -> rule
  ``ambiguous``) do not count and score 0; otherwise ``score`` is the token recall (precision/F1 in
  ``detail``)."""

from __future__ import annotations

from medvl.eval.parse import extract_choice, extract_yes_no, match_open
from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import gold_yes_no, is_refusal
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


# extract_choice rules that read an option letter (not an option text) from the reply
_LETTER_RULES = frozenset({"bare_letter", "leading_letter", "answer_marker_letter", "single_letter"})


@SCORERS.register("medvl")
class MedvlScorer(Scorer):
    description = "medvl rules: letter/option-text/marker extraction, negation-aware yes/no, no guessing"

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        if item.meta.get("posed_as") == "closed_as_mc":
            return self._score_closed_as_mc(item, reply)
        letter, rule = extract_choice(reply, item.options, item.lang)
        return make_result(item, letter, letter is not None and letter == item.answer, rule)

    def _score_closed_as_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        """A yes/no item posed as options A = yes, B = no: the reply's yes/no decides (不是 -> B, 有 -> A,
        "Not seen" -> B); only a reply naming no yes/no is read for a letter ("B", "The answer is A")."""
        label, rule = extract_yes_no(reply, item.lang)
        if label is not None:
            letter: str | None = "A" if label == "yes" else "B"
        else:
            letter, choice_rule = extract_choice(reply, item.options, item.lang)
            if choice_rule.rsplit(":", 1)[-1] in _LETTER_RULES:
                rule = choice_rule
            else:
                letter = None
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
        detail = {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"]}
        if m["exact"]:
            return make_result(item, m["parsed"], True, "exact", score=m["recall"], **detail)
        if m["contained"] and m["ambiguous"]:
            return make_result(item, m["parsed"], False, "ambiguous", score=0.0, **detail)
        if m["contained"] and m["negated"]:
            return make_result(item, m["parsed"], False, "negated", score=0.0, **detail)
        rule = "contained" if m["contained"] else "no_match"
        return make_result(item, m["parsed"], m["contained"], rule, score=m["recall"],
                           unparsed=m["parsed"] is None, **detail)
