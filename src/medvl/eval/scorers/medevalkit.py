"""``medevalkit``: MedEvalKit's answer extraction.

1. the content of the last ``\\boxed{..}`` or ``<answer>..</answer>`` if any, else the whole reply;
2. the text after the last of "final answer", "answer is", "answer:", "答案:", "答案：", "答案是"
   (lower-cased search), stripped;
3. yes/no (closed items with a yes/no gold): exactly one of "yes" / "no" must occur as a *substring* of
   the lower-cased answer, so "nodule" counts as "no" (toolkit quirk); both or none -> unparsed.
   Chinese is medvl's extension (the toolkit's rule is English): the negative forms 不是 / 没有 / 否 / 不 /
   无 are found and removed first and mean "no", then 是 / 有 in what is left mean "yes" -- a plain
   substring test for 是 would read 不是 as "yes";
4. multiple choice: a letter (the answer is a lone option letter, or starts with "X." / "X)" / "(X)"),
   else an option text contained in the answer (the longest if several), else the most similar option
   (difflib ratio of (option, answer) as ``omnimedvqa.most_similar`` computes it, first on ties; all
   zero -> unparsed).
Open items and closed items with other golds fall back to ``medvl``."""

from __future__ import annotations

import re

from medvl.eval.parse import narrow
from medvl.eval.scorers._base import Scorer, make_result
from medvl.eval.scorers._text import VOCAB, gold_yes_no
from medvl.eval.scorers.omnimedvqa import most_similar
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_MARKERS = tuple(VOCAB["medevalkit"]["markers"])
_YES = tuple(VOCAB["medevalkit"]["yes"])
_NO = tuple(VOCAB["medevalkit"]["no"])
_ZH_NO = tuple(VOCAB["medevalkit"]["zh_no"])
_ZH_YES = tuple(VOCAB["medevalkit"]["zh_yes"])
_LONE = re.compile(r"[\(（]?([A-Za-z])[\)）]?[.:：]?")
_LEADING = re.compile(r"[\(（]?([A-Z])[\)）.:：]")


def extract_answer(reply: str) -> str:
    """Steps 1-2: the boxed/tagged content, then the text after the last answer marker."""
    text, _ = narrow(reply)
    low = text.lower()
    best_end = -1
    for marker in _MARKERS:
        pos = low.rfind(marker)
        if pos >= 0 and pos + len(marker) > best_end:
            best_end = pos + len(marker)
    if best_end >= 0:
        text = text[best_end:]
    return text.strip().strip(":：").strip()


@SCORERS.register("medevalkit")
class MedEvalKitScorer(Scorer):
    description = ("MedEvalKit: boxed/marker extraction; yes/no substrings; letter, option text, similarity; "
                   "Chinese yes/no (negatives before 是/有) is medvl's extension")
    supports = ("mc", "closed")

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        ans = extract_answer(reply)
        m = _LONE.fullmatch(ans) or _LEADING.match(ans)
        if m and m.group(1).upper() in item.options:
            letter, rule = m.group(1).upper(), "letter"
        else:
            low = ans.lower()
            hits = [k for k, v in item.options.items() if str(v).lower() and str(v).lower() in low]
            if hits:
                letter = max(hits, key=lambda k: len(str(item.options[k])))
                rule = "option_text"
            else:
                letter, _ = most_similar(ans, item.options)
                rule = "most_similar" if letter else "all_ratios_zero"
        if letter is None:
            return make_result(item, None, False, rule)
        return make_result(item, letter, letter == item.answer, rule)

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        polarity = gold_yes_no(item.answer)
        if polarity is None and item.answer is not None:
            from medvl.eval.scorers.medvl import MedvlScorer

            res = MedvlScorer().score(item, reply)
            res.detail["fallback"] = "medvl"
            return res
        low = extract_answer(reply).lower()
        has_yes, has_no = any(y in low for y in _YES), any(n in low for n in _NO)
        rest = low
        for form in _ZH_NO:  # Chinese (medvl's extension): negatives first, so 不是 is not read as 是
            if form in rest:
                has_no, rest = True, rest.replace(form, " ")
        has_yes = has_yes or any(y in rest for y in _ZH_YES)
        if has_yes == has_no:
            return make_result(item, None, False, "both_yes_no" if has_yes else "no_yes_no")
        label = "yes" if has_yes else "no"
        return make_result(item, label, label == polarity, "yes_no_substring")
