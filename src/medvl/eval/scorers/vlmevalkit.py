"""``vlmevalkit``: VLMEvalKit's rule-based option matcher, without an LLM judge.

mc (in this order):
1. letters: the characters ``.()[],:;!*#{}`` become spaces, the reply is split on whitespace, and the
   option letters present as whole *uppercase* tokens are counted (distinct letters). Exactly one ->
   that letter, but (recent versions) only if it is among the last 4 tokens. A refusal phrase with no
   letter -> "Z" (a definite, wrong answer). Note: the article "A" counts as letter A (toolkit quirk).
2. option text: exactly one option text (lower-cased) is a substring of the lower-cased reply, and the
   reply is at most twice as long as all option texts together -> that option.
3. "answer is X" with X in A-D (recent versions).
4. otherwise: without a judge the item is wrong; we mark it ``unparsed`` (no random option is drawn).
closed: VLMEvalKit's yes/no extraction: the lower-cased reply's words contain "yes" and not "no" -> yes,
the reverse -> no, else unknown (unparsed). open: falls back to the ``medvl`` scorer.
"""

from __future__ import annotations

import re

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import VOCAB, gold_yes_no
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_REFUSALS = tuple(VOCAB["vlmevalkit"]["refusals"])
_ANSWER_IS = re.compile(r"answer is\s*\(?([A-D])\b")
_WORDS = re.compile(r"[a-z]+")


def infer_letter(reply: str, options: dict[str, str], recent: bool = True) -> tuple[str | None, str]:
    """Rule 1: one option letter as a whole uppercase token (among the last 4 when ``recent``)."""
    tokens = reply.translate(_SEPARATORS).split()
    present = [k for k in options if k in tokens]
    if len(present) == 1:
        letter = present[0]
        last_index = len(tokens) - 1 - tokens[::-1].index(letter)
        if not recent or last_index > len(tokens) - 5:
            return letter, "letter_token"
        return None, "letter_not_in_last_4_tokens"
    if not present and any(p in reply for p in _REFUSALS):
        return "Z", "refusal_Z"
    return None, "letters_ambiguous" if present else "no_letter"


def infer_text(reply: str, options: dict[str, str]) -> str | None:
    """Rule 2: exactly one option text is a substring of the reply (reply not overly long)."""
    low = reply.lower()
    if len(low) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    hits = [k for k, v in options.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


@SCORERS.register("vlmevalkit")
class VLMEvalKitScorer(Scorer):
    description = "VLMEvalKit option matcher (letter token, option text, 'answer is X'); no judge, no random"
    supports = ("mc", "closed")

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = infer_letter(reply, item.options)
        if letter == "Z":
            return make_result(item, "Z", False, rule, unparsed=False, refusal=True)
        if letter is None:
            letter = infer_text(reply, item.options)
            rule = "option_text" if letter else rule
        if letter is None:
            m = _ANSWER_IS.search(reply)
            if m and m.group(1) in item.options:
                letter, rule = m.group(1), "answer_is"
        if letter is None:
            return make_result(item, None, False, "no_match_wrong_without_judge", would_guess=False)
        return make_result(item, letter, letter == item.answer, rule)

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        words = set(_WORDS.findall(reply.lower()))
        label = "yes" if "yes" in words and "no" not in words else (
            "no" if "no" in words and "yes" not in words else None)
        gold = gold_yes_no(item.answer)
        if gold is None and item.answer is not None:  # not a yes/no question: medvl's open rule
            from medvl.eval.scorers.medvl import MedvlScorer

            res = MedvlScorer().score_open(item, reply)
            res.detail["fallback"] = "medvl"
            return res
        return make_result(item, label, label == gold, "yes_no_words" if label else "unknown")
