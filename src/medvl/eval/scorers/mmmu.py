"""``mmmu``: MMMU's official answer parsing (``lmms_eval=True`` adds lmms-eval's extra letter forms).

Multiple choice: strip ``, . ! ? ; : '`` from both ends (one character kind after the other), pad with
spaces; candidates are the letters written ``(X)``; else ``" X "`` (lmms-eval: else ``"X "``, else
``"X."``); else, for replies longer than 5 words, the options whose text occurs in the reply. Several
candidates -> the one mentioned last. None -> MMMU draws a random option: we return unparsed with
``would_guess``. Letters are case-sensitive, so the article "A" is read as option A (toolkit quirk).

Open (also used for closed items): the lower-cased reply is split into sentences (as in the official
code, lower-casing first means only line breaks split), each sentence keeps its shortest tail after an
indicator word (could be, so, is, thus, therefore, final, answer, result, and "=" in the last sentence);
numbers are collected from those tails; numbers are compared rounded to 2 decimals, strings by
containment of the normalized gold in the prediction (one-character golds padded with a space)."""

from __future__ import annotations

import ast
import re

import numpy as np

from medvl.eval.scorers._base import Scorer, guess_refused, make_result
from medvl.eval.scorers._text import VOCAB
from medvl.eval.types import SCORERS, EvalItem, ScoreResult

_STRIP_ORDER = (",", ".", "!", "?", ";", ":", "'")
_INDICATORS = tuple(VOCAB["mmmu"]["indicators"])
_SENTENCES = re.compile(r"\.\s(?=[A-Z])|\n")
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCI = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}


def parse_multi_choice(reply: str, options: dict[str, str], lmms_eval: bool = False) -> tuple[str | None, str]:
    """The MMMU letter for ``reply`` or None (where MMMU would guess), and the rule that fired."""
    r = reply
    for ch in _STRIP_ORDER:
        r = r.strip(ch)
    r = f" {r} "
    forms = [("bracket", "({})"), ("space", " {} ")]
    if lmms_eval:
        forms += [("trailing_space", "{} "), ("dot", "{}.")]
    for rule, form in forms:
        cands = [c for c in options if form.format(c) in r]
        if cands:
            if len(cands) == 1:
                return cands[0], rule
            pos = [r.rfind(form.format(c)) for c in cands]
            return cands[int(np.argmax(pos))], rule + "_last"
    if len(r.split()) > 5:
        low = r.lower()
        cands = [k for k, v in options.items() if str(v).lower() in low]
        if cands:
            pos = [low.rfind(str(options[c]).lower()) for c in cands]
            return cands[int(np.argmax(pos))], "option_text" + ("_last" if len(cands) > 1 else "")
    return None, "no_candidate"


def _key_subresponses(reply: str) -> list[str]:
    r = reply.strip().strip(".").lower()
    subs = _SENTENCES.split(r)
    keys: list[str] = []
    for i, sub in enumerate(subs):
        indicators = _INDICATORS + (("=",) if i == len(subs) - 1 else ())
        shortest: str | None = None
        for ind in indicators:
            if ind in sub:
                tail = sub.split(ind)[-1].strip()
                if not shortest:
                    shortest = tail
                elif len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [r]


def extract_numbers(text: str) -> list[str]:
    """Numbers written with thousands commas, in scientific notation, or plainly."""
    return (_NUM_COMMAS.findall(text) + _NUM_SCI.findall(text) + _NUM_SIMPLE.findall(text))


def _normalize(value: str) -> list[str | float]:
    s = value.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        s = s.lower()
        return [" " + s, s + " "] if len(s) == 1 else [s]


def parse_open(reply: str) -> list[str | float]:
    """MMMU's list of normalized predictions for an open reply (order kept, duplicates dropped)."""
    keys = _key_subresponses(reply)
    raw = list(keys) + [n for k in keys for n in extract_numbers(k)]
    out: list[str | float] = []
    for item in raw:
        for v in _normalize(item):
            if v not in out:
                out.append(v)
    return out


def gold_answers(answer: str) -> list[str | float]:
    """Normalized gold answers; a gold written as a Python list literal is read literally (never eval)."""
    values: list[str] = [answer]
    text = answer.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)
            if isinstance(parsed, (list, tuple)):
                values = [str(v) for v in parsed]
        except (ValueError, SyntaxError):
            pass
    return [n for v in values for n in _normalize(v)]


def eval_open(preds: list[str | float], golds: list[str | float]) -> bool:
    """True when a string prediction contains a string gold or a number prediction equals a number gold."""
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


@SCORERS.register("mmmu")
class MMMUScorer(Scorer):
    description = "MMMU official parsing: (X) / ' X ' / option text, last mention; open: numbers/strings"
    lmms_eval: bool = False

    def __init__(self, lmms_eval: bool = False):
        self.lmms_eval = lmms_eval

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        letter, rule = parse_multi_choice(reply, item.options, self.lmms_eval)
        if letter is None:
            return guess_refused(item, rule)
        return make_result(item, letter, letter == item.answer, rule)

    def score_open(self, item: EvalItem, reply: str) -> ScoreResult:
        preds = parse_open(reply)
        ok = item.answer is not None and eval_open(preds, gold_answers(item.answer))
        parsed = " | ".join(str(p) for p in preds) if reply.strip() else None
        return make_result(item, parsed, ok, "open_match" if ok else "open_no_match",
                           preds=[str(p) for p in preds])

    score_closed = score_open
