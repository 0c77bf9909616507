r"""``vlmevalkit``: VLMEvalKit's rule-based option matcher ``can_infer`` (pin: ``vlmeval/utils/matching_util.py``
at commit e8e78f0), without an LLM judge. Written from the rule, not copied.

mc, option rule first, then the text rule:
1. a reply containing "Failed to obtain answer via API" gives the option rule nothing (the text rule still
   runs, as at the pin); a reply containing one of the refusal phrases (case-sensitive) is "Z", a definite
   wrong answer, whatever letters it also holds;
2. each of ``.()[],:;!*#{}`` becomes a space and the reply is split on whitespace; the option letters present
   as whole tokens (case-sensitive, each counted once) are counted. Exactly one -> that letter, but only when
   its *first* occurrence is among the last 4 tokens; none, and "Z" is a token -> "Z" (a bare "Z" reply);
3. otherwise the first match of ``(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**`` -> its letter upper-cased
   when it is an option (no word boundary after the letter: "the answer is based on" reads B);
4. the text rule: a reply (lower-cased) at most twice as long as all option texts together, in which exactly
   one option text (lower-cased) occurs as a substring ("abnormal" contains "normal") -> that option;
5. otherwise no answer: without a judge the item is wrong; we mark it ``unparsed`` (no random option).
closed: VLMEvalKit's yes/no extraction: the lower-cased reply's words contain "yes" and not "no" -> yes,
the reverse -> no, else unknown (unparsed). open: falls back to the ``medvl`` scorer.
"""

from __future__ import annotations

import re

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import VOCAB, gold_yes_no
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_SEPARATORS = str.maketrans({c: " " for c in ".()[],:;!*#{}"})
_API_FAILURE = VOCAB["vlmevalkit"]["api_failure"]
_REFUSALS = tuple(VOCAB["vlmevalkit"]["refusals"])
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
_WORDS = re.compile(r"[a-z]+")
LAST_TOKENS = 4


def infer_option(reply: str, options: dict[str, str]) -> tuple[str | None, str]:
    """Steps 1-3 (VLMEvalKit ``can_infer_option``): (letter, "Z" or None, the rule that decided)."""
    if _API_FAILURE in reply:
        return None, "api_failure"
    if any(p in reply for p in _REFUSALS):
        return "Z", "refusal_Z"
    tokens = reply.translate(_SEPARATORS).split()
    present = [k for k in options if k in tokens]
    if len(present) == 1:
        if tokens.index(present[0]) >= len(tokens) - LAST_TOKENS:
            return present[0], "letter_token"
        rule = "letter_not_in_last_4_tokens"
    elif not present and "Z" in tokens:
        return "Z", "bare_Z"
    else:
        rule = "letters_ambiguous" if present else "no_letter"
    m = _ANSWER_IS.search(reply)
    if m and m.group(1).upper() in options:
        return m.group(1).upper(), "answer_is"
    return None, rule


def infer_text(reply: str, options: dict[str, str]) -> str | None:
    """Step 4 (VLMEvalKit ``can_infer_text``): exactly one option text inside a not overly long reply."""
    low = reply.lower()
    if len(low) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    hits = [k for k, v in options.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else None


def can_infer(reply: str, options: dict[str, str]) -> tuple[str | None, str]:
    """The option rule, then the text rule: (letter, "Z" or None, rule)."""
    letter, rule = infer_option(reply, options)
    if letter is not None:
        return letter, rule
    text = infer_text(reply, options)
    return (text, "option_text") if text else (None, rule)


@SCORERS.register("vlmevalkit")
class VLMEvalKitScorer(Scorer):
    description = "VLMEvalKit option matcher (letter token, option text, 'answer is X'); no judge, no random"
    supports = ("mc", "closed")

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = can_infer(reply, item.options)
        if letter == "Z":
            return make_result(item, "Z", False, rule, unparsed=False, refusal=True)
        if letter is None:
            return make_result(item, None, False, "no_match_wrong_without_judge", would_guess=False, tried=rule)
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
