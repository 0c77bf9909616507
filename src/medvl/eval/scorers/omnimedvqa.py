"""``omnimedvqa``: OmniMedVQA's official matching. The raw reply is compared with each option text by
``difflib.SequenceMatcher(None, reply, option).ratio()``; the most similar option (the first on ties) is
the answer. When every ratio is zero the item is wrong (reported as unparsed). Multiple choice only."""

from __future__ import annotations

from difflib import SequenceMatcher

from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.types import SCORERS, EvalItem, ScoreResult


def most_similar(reply: str, options: dict[str, str]) -> tuple[str | None, float]:
    """The option whose text is most similar to ``reply`` (first on ties) and its ratio; None if all 0."""
    best, best_ratio = None, 0.0
    matcher = SequenceMatcher(None)
    matcher.set_seq1(reply)
    for key, text in options.items():
        matcher.set_seq2(str(text))  # a = reply, b = option text, as the official script compares them
        # the quick ratios are upper bounds of ratio(): an option that cannot beat the best is skipped
        if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio:
            best, best_ratio = key, ratio
    return best, best_ratio


@SCORERS.register("omnimedvqa")
class OmniMedVQAScorer(Scorer):
    description = "OmniMedVQA official: most similar option text (difflib ratio), all-zero -> wrong"
    supports = ("mc",)

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, ratio = most_similar(reply, item.options)
        if letter is None:
            return make_result(item, None, False, "all_ratios_zero", ratio=0.0)
        return make_result(item, letter, letter == item.answer, "most_similar", ratio=round(ratio, 6))
