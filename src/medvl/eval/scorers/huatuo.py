"""``huatuo``: HuatuoGPT-Vision's multiple-choice matching (its ``scorer.py``, function ``match_choice3``).

1. letter: the first letter a-n or A-N (either case) that stands alone, i.e. comes right after the start
   of the reply, any non-word character (space, "(", "*", "'", '"', "#", "：", newline ...), "is ", "是" or
   "为", and is followed by a non-word character or the end; "a " / "A " (a letter followed by a space) is
   never taken, anywhere. The letter is returned as written, so a lower-case "c" never equals the gold "C".
   Known flaws that follow from this rule and are kept: "I think the answer is C" -> "I"; "Option A is
   correct" skips "A " and falls through to the option text;
2. else the option whose text occurs last in the lower-cased reply (the first option on equal positions);
3. else the most similar option: ``difflib`` ratio of (lower-cased option, lower-cased reply), the *last*
   one on ties (the toolkit uses ``>=``). When every ratio is zero the toolkit still returns the last
   option; medvl refuses that guess (unparsed, ``detail["would_guess"]``).
Closed yes/no items are first posed as HuatuoGPT-Vision does (``protocols.pose_closed_as_mc``: A = yes,
B = no; Chinese items 是 / 否). medvl's extension, not the toolkit's: for the options 是 / 否, Chinese
negative forms (不是 / 没有 / 否 / 不 / 无) are checked before step 2, then positive forms (是 / 有), so
"不是" is 否 and not 是 by substring. Open items and closed items with other golds fall back to ``medvl``.

Note: docs/BENCHMARKS.md calls step 1 case-sensitive and the "A " skip start-only; the toolkit's own
pattern accepts both cases and skips "A "/"a " at every position, which is what is implemented here."""

from __future__ import annotations

import re

from medvl.eval.protocols import pose_closed_as_mc
from medvl.eval.scorers._base import Scorer, guess_refused, make_result
from medvl.eval.scorers._text import VOCAB
from medvl.eval.scorers.omnimedvqa import most_similar
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

# prefix: "is ", 是, 为, a non-word character or the start; no "a "/"A "; a letter a-n / A-N; then a
# non-word character or the end (Python's Unicode \W: CJK ideographs are word characters, CJK
# punctuation is not)
_LETTER = re.compile(r"(?:is |是|为|\W|^)(?![aA] )([a-nA-N])(?:\W|$)", re.DOTALL)
_ZH_NO = tuple(VOCAB["huatuo"]["zh_no"])
_ZH_YES = tuple(VOCAB["huatuo"]["zh_yes"])


def _zh_yes_no_option(reply: str, options: dict[str, str]) -> str | None:
    """medvl's extension for options 是 / 否: the option a Chinese yes/no reply means, negatives first."""
    by_text = {str(v).strip(): k for k, v in options.items()}
    if set(by_text) != {"是", "否"}:
        return None
    rest = reply
    negative = False
    for form in _ZH_NO:
        if form in rest:
            negative = True
            rest = rest.replace(form, " ")
    if negative:
        return by_text["否"]
    if any(form in rest for form in _ZH_YES):
        return by_text["是"]
    return None


def match_choice(reply: str, options: dict[str, str]) -> tuple[str | None, str]:
    """HuatuoGPT-Vision's letter for ``reply`` (may be a letter that is not an option) and the rule;
    (None, "all_ratios_zero") where the toolkit would fall back to its last option without evidence."""
    m = _LETTER.search(reply)
    if m:
        return m.group(1), "letter"
    zh = _zh_yes_no_option(reply, options)
    if zh is not None:
        return zh, "zh_yes_no"
    low = reply.lower()
    best, best_pos = None, -1
    for key, text in options.items():
        pos = low.rfind(str(text).lower()) if str(text) else -1
        if pos > best_pos:
            best, best_pos = key, pos
    if best is not None:
        return best, "option_text_last"
    letter, _ = most_similar(reply, options, ties="last", lower=True)
    return letter, "most_similar" if letter else "all_ratios_zero"


@SCORERS.register("huatuo")
class HuatuoScorer(Scorer):
    description = ("HuatuoGPT-Vision match_choice3: first standalone letter a-n/A-N after start/non-word "
                   "char/'is '/是/为 ('A ' skipped), else last option text, else most similar (last on ties); "
                   "Chinese 是/否 handling is medvl's extension")
    supports = ("mc", "closed")

    def score(self, item: EvalItem, response: str | None) -> ScoreResult:
        return super().score(pose_closed_as_mc(item), response)

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = match_choice(reply, item.options)
        if letter is None:
            return guess_refused(item, rule)
        return make_result(item, letter, letter == item.answer, rule, not_an_option=letter not in item.options)

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        from medvl.eval.scorers.medvl import MedvlScorer

        res = MedvlScorer().score(item, reply)  # closed item whose gold is not yes/no
        res.detail["fallback"] = "medvl"
        return res
