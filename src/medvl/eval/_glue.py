"""The one place the runner reaches into the protocol, scorer, metrics and judge modules, so small
naming differences between them are absorbed here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.types import EvalItem, ScoreResult


def get_protocol(name: str) -> Any:
    """The protocol object (``name``, ``default_scorer``, ``max_new_tokens``, ``prompt``, ``pose``)."""
    from medvl.eval import protocols

    return protocols.get_protocol(name)


def protocol_names() -> list[str]:
    from medvl.eval import protocols

    return sorted(protocols.PROTOCOLS)


def get_scorer(name: str) -> Any:
    """The scorer registered as ``name`` (an object with ``score(item, response)``)."""
    from medvl.eval import protocols

    return protocols.get_scorer(name)


def scorer_names() -> list[str]:
    from medvl.eval.types import SCORERS

    return SCORERS.names()


def pose(protocol: Any, item: EvalItem) -> EvalItem:
    """The item as the protocol asks it (what the scorer must see)."""
    return protocol.pose(item) if hasattr(protocol, "pose") else item


def call_scorer(scorer: Any, item: EvalItem, response: str) -> ScoreResult:
    res = scorer.score(item, response) if hasattr(scorer, "score") else scorer(item, response)
    if not isinstance(res, ScoreResult):
        raise TypeError(f"scorer {scorer!r} returned {type(res).__name__}, not ScoreResult")
    return res


def summarize(samples: list[dict[str, Any]], group_keys: list[str] | None, n_boot: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """``{"overall": stats, "by_group": {key: {value: stats}}, "by_answer_type", "by_lang"}``; stats
    carry n, n_scored, n_correct, accuracy, ci95, mean_score."""
    from medvl.eval import metrics

    return metrics.summarize(samples, group_keys, n_boot=n_boot, seed=seed)


def paired_comparison(a: list[dict[str, Any]], b: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    from medvl.eval import metrics

    return dict(metrics.paired_comparison(a, b, n_boot=n_boot, seed=seed))


def make_judge(spec: str, out_dir: Path, judge_open: bool = False, **options: Any) -> Any:
    from medvl.eval.judge import LLMJudge

    return LLMJudge.from_spec(spec, cache_path=Path(out_dir) / "judge_cache.jsonl", judge_open=judge_open,
                              **options)
