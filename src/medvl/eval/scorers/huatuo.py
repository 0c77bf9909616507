"""``huatuo``: HuatuoGPT-Vision's multiple-choice matching.

1. the first standalone capital letter A-N (not followed by a letter or digit) that comes right after
   "is " / "is", "(", "*", "是", or the start of the reply; at the start the article "A " is skipped.
   Case-sensitive. Known flaw kept: "I think the answer is C" -> "I" (a letter that is no option, wrong);
2. else the option whose text (lower-cased) occurs last in the reply;
3. else the most similar option (difflib ratio; first on ties); all ratios zero -> unparsed.
Closed yes/no items are first posed as HuatuoGPT-Vision does (``protocols.pose_closed_as_mc``: A = yes,
B = no); open items and closed items with other golds fall back to ``medvl``."""

from __future__ import annotations

import re

from medvl.eval.protocols import pose_closed_as_mc
from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers.omnimedvqa import most_similar
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_LETTER = re.compile(r"(?:^(?!A )|is ?|\(|\*|是)([A-N])(?![A-Za-z0-9])")


def match_choice(reply: str, options: dict[str, str]) -> tuple[str | None, str]:
    """HuatuoGPT-Vision's letter for ``reply`` (may be a letter that is not an option) and the rule."""
    m = _LETTER.search(reply)
    if m:
        return m.group(1), "letter"
    low = reply.lower()
    best, best_pos = None, -1
    for key, text in options.items():
        pos = low.rfind(str(text).lower())
        if pos > best_pos:
            best, best_pos = key, pos
    if best is not None:
        return best, "option_text_last"
    letter, _ = most_similar(reply, options)
    return letter, "most_similar" if letter else "all_ratios_zero"


@SCORERS.register("huatuo")
class HuatuoScorer(Scorer):
    description = "HuatuoGPT-Vision: first letter after is/(/*/是/start, else option text, else most similar"
    supports = ("mc", "closed")

    def score(self, item: EvalItem, response: str | None) -> ScoreResult:
        return super().score(pose_closed_as_mc(item), response)

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = match_choice(reply, item.options)
        if letter is None:
            return make_result(item, None, False, rule)
        return make_result(item, letter, letter == item.answer, rule, not_an_option=letter not in item.options)

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        from medvl.eval.scorers.medvl import MedvlScorer

        res = MedvlScorer().score(item, reply)  # closed item whose gold is not yes/no
        res.detail["fallback"] = "medvl"
        return res
