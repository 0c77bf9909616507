"""``omnimedvqa``: OmniMedVQA's official matching. Each option text is compared with the raw reply by
``difflib.SequenceMatcher(None, option, reply).ratio()`` (option first, reply second, default autojunk);
the most similar option (the first on ties) is the answer. When every ratio is zero the item is wrong
(reported as unparsed). Multiple choice only.

Source checked (OpenGVLab/Multi-Modality-Arena, ``MedicalEval/Question-answering_Score/utils/medicalqa.py``):
its helper walks the option list and calls its similarity function with the option as the first sequence
and the model output as the second; it keeps an option only when its ratio is strictly higher than the
best so far (starting from 0), so ties keep the earlier option and all-zero ratios leave no index, which
makes the later lookup fail and the item count as wrong. It then compares the chosen option *text* with
the gold text. The order matters: ``ratio()`` is not symmetric once the second sequence is 200 characters
or longer, because difflib's autojunk heuristic then ignores that sequence's most frequent characters.
In the official order that second sequence is the (long) reply."""

from __future__ import annotations

from difflib import SequenceMatcher

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


def _may_win(bound: float, best: float, ties: str) -> bool:
    return bound > best or (ties == "last" and bound == best and bound > 0)


def most_similar(reply: str, options: dict[str, str], *, ties: str = "first",
                 lower: bool = False) -> tuple[str | None, float]:
    """The option whose text is most similar to ``reply`` and its ratio; None when every ratio is 0.

    Ratios are ``SequenceMatcher(None, option_text, reply).ratio()`` (OmniMedVQA's order). ``ties``:
    "first" keeps the earliest best option (a strictly higher ratio replaces it), "last" the latest (an
    equal ratio replaces it, HuatuoGPT-Vision's ``>=``). ``lower``: compare lower-cased texts."""
    if ties not in ("first", "last"):
        raise ValueError(f"ties must be 'first' or 'last', got {ties!r}")
    best, best_ratio = None, 0.0
    matcher = SequenceMatcher(None)
    matcher.set_seq2(reply.lower() if lower else reply)  # b = the reply (difflib caches b's index)
    for key, text in options.items():
        matcher.set_seq1(str(text).lower() if lower else str(text))  # a = the option text
        # the quick ratios are upper bounds of ratio(): an option that cannot beat the best is skipped
        if not (_may_win(matcher.real_quick_ratio(), best_ratio, ties)
                and _may_win(matcher.quick_ratio(), best_ratio, ties)):
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio or (ties == "last" and ratio == best_ratio and ratio > 0):
            best, best_ratio = key, ratio
    return best, best_ratio


@SCORERS.register("omnimedvqa")
class OmniMedVQAScorer(Scorer):
    description = ("OmniMedVQA official: most similar option text, difflib ratio(option, reply) as the official "
                   "script orders it, first on ties, all-zero -> wrong")
    supports = ("mc",)

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, ratio = most_similar(reply, item.options)
        if letter is None:
            return make_result(item, None, False, "all_ratios_zero", ratio=0.0)
        return make_result(item, letter, letter == item.answer, "most_similar", ratio=round(ratio, 6))
