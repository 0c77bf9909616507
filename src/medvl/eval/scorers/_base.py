"""Base class of the scorers: dispatch on answer type, hidden-gold handling, fallback for unsupported types."""

from __future__ import annotations

from typing import Any, ClassVar

from medvl.eval.types import EvalItem, ScoreResult


def make_result(item: EvalItem, parsed: str | None, is_correct: bool, rule: str, *,
                score: float | None = None, unparsed: bool | None = None, **detail: Any) -> ScoreResult:
    """A ``ScoreResult``: ``correct`` is None when the gold is hidden; ``score`` defaults to 1.0/0.0;
    ``unparsed`` defaults to ``parsed is None``."""
    hidden = item.answer is None
    if unparsed is None:
        unparsed = parsed is None
    correct = None if hidden else bool(is_correct and not unparsed)
    if score is None:
        score = 1.0 if correct else 0.0
    if hidden:
        score = 0.0
    detail = {"rule": rule, **detail}
    return ScoreResult(parsed=parsed, correct=correct, score=float(score), unparsed=bool(unparsed), detail=detail)


def guess_refused(item: EvalItem, rule: str, **detail: Any) -> ScoreResult:
    """Where the toolkit would pick a random option: unparsed, wrong, ``detail["would_guess"] = True``."""
    return make_result(item, None, False, rule, unparsed=True, would_guess=True, **detail)


class Scorer:
    """A scorer turns (item, raw reply) into a ``ScoreResult``. Subclasses implement ``score_<type>`` for
    the answer types in ``supports``; other types are scored by the ``medvl`` scorer and marked
    ``detail["fallback"] = "medvl"``."""

    description: ClassVar[str] = ""
    supports: ClassVar[tuple[str, ...]] = ("mc", "closed", "open")

    def score(self, item: EvalItem, response: str | None) -> ScoreResult:
        reply = "" if response is None else str(response)
        if item.answer_type not in self.supports:
            from medvl.eval.scorers.medvl import MedvlScorer

            res = MedvlScorer().score(item, reply)
            res.detail["fallback"] = "medvl"
            return res
        if item.answer_type == "mc":
            return self.score_mc(item, reply)
        if item.answer_type == "closed":
            return self.score_closed(item, reply)
        return self.score_open(item, reply)

    def score_mc(self, item: EvalItem, reply: str) -> ScoreResult:
        raise NotImplementedError

    def score_closed(self, item: EvalItem, reply: str) -> ScoreResult:
        raise NotImplementedError

    def score_open(self, item: EvalItem, reply: str) -> ScoreResult:
        raise NotImplementedError
