"""Metrics over scored predictions: accuracy with parse-failure rate, bootstrap confidence intervals,
paired model comparison (paired bootstrap + exact McNemar), and the results-JSON summary.

A *result* is a dict with at least ``score`` (float), ``correct`` (bool, or None when the gold is
hidden), ``unparsed`` (bool), ``groups`` (dict), ``answer_type`` and ``lang``; ``paired_comparison`` also
needs ``id``. Accuracies are fractions in [0, 1]. Everything is deterministic for a given seed."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
from scipy.stats import binomtest

MISSING = "(missing)"
_CHUNK_ELEMENTS = 4_000_000  # resampling draws generated per chunk (memory bound)
_MAX_LEVELS = 64  # at most this many distinct values: multinomial shortcut


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` bootstrap resamples of ``values``. Data with few distinct values (0/1
    correctness, paired differences in {-1, 0, 1}) use the exact shortcut: the resample's value counts
    are Multinomial(n, observed frequencies). Other data are resampled index-wise in chunks."""
    n = len(values)
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) <= _MAX_LEVELS:
        draws = rng.multinomial(n, counts / n, size=n_boot)
        return draws @ levels / n
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap ``1 - alpha`` interval of the mean of ``values`` ((nan, nan) when empty)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return (float("nan"), float("nan"))
    means = _resampled_means(arr, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    scored = [r for r in results if r.get("correct") is not None]
    n_correct = sum(1 for r in scored if r["correct"])
    n_unparsed = sum(1 for r in results if r.get("unparsed"))
    open_scores = [float(r.get("score", 0.0)) for r in scored if r.get("answer_type") == "open"]
    out: dict[str, Any] = {
        "n": n,
        "n_scored": len(scored),
        "n_correct": n_correct,
        "accuracy": n_correct / len(scored) if scored else None,
        "n_unparsed": n_unparsed,
        "parse_failure_rate": n_unparsed / n if n else None,
        "mean_score": float(np.mean([float(r.get("score", 0.0)) for r in scored])) if scored else None,
    }
    if open_scores:
        out["n_open"] = len(open_scores)
        out["mean_score_open"] = float(np.mean(open_scores))
    return out


def _group_values(results: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    buckets: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        value = r.get("groups", {}).get(key)
        buckets.setdefault(MISSING if value in (None, "") else str(value), []).append(r)
    return {k: buckets[k] for k in sorted(buckets)}


def _all_group_keys(results: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({k for r in results for k in r.get("groups", {})})


def accuracy(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, accuracy, parse-failure rate and mean score of ``results``, plus the same per value of
    every group key present (``"by_group": {key: {value: {...}}}``)."""
    out = _stats(results)
    out["by_group"] = {key: {v: _stats(rs) for v, rs in _group_values(results, key).items()}
                       for key in _all_group_keys(results)}
    return out


def _with_ci(results: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    out = _stats(results)
    values = [1.0 if r["correct"] else 0.0 for r in results if r.get("correct") is not None]
    lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    out["ci95"] = None if not values else [lo, hi]
    return out


def summarize(results: list[dict[str, Any]], group_keys: Sequence[str] | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The results-JSON structure: ``{"overall", "by_group": {key: {value: stats}}, "by_answer_type",
    "by_lang"}``; every stats dict has a bootstrap 95% CI of accuracy (``ci95``). ``group_keys`` None
    means every key found in the results' ``groups``; values are sorted; absent values are "(missing)"."""
    keys = list(group_keys) if group_keys is not None else _all_group_keys(results)

    def split(field: str) -> dict[str, Any]:
        buckets: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            buckets.setdefault(str(r.get(field) or MISSING), []).append(r)
        return {k: _with_ci(buckets[k], n_boot, seed) for k in sorted(buckets)}

    return {
        "overall": _with_ci(results, n_boot, seed),
        "by_group": {key: {v: _with_ci(rs, n_boot, seed) for v, rs in _group_values(results, key).items()}
                     for key in keys},
        "by_answer_type": split("answer_type"),
        "by_lang": split("lang"),
    }


def _by_id(results: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        rid = str(r["id"])
        if rid in out:
            raise ValueError(f"paired_comparison: id {rid!r} appears twice in results_{name}")
        out[rid] = r
    return out


def paired_comparison(results_a: list[dict[str, Any]], results_b: list[dict[str, Any]],
                      n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare two models on the items both scored (matched by ``id``; hidden-gold items skipped):
    accuracy difference a - b with a paired-bootstrap 95% CI, exact McNemar p-value (two-sided binomial
    test on the discordant pairs), and the 2x2 counts."""
    a, b = _by_id(results_a, "a"), _by_id(results_b, "b")
    ids = sorted(i for i in a if i in b and a[i].get("correct") is not None and b[i].get("correct") is not None)
    ca = np.array([bool(a[i]["correct"]) for i in ids], dtype=bool)
    cb = np.array([bool(b[i]["correct"]) for i in ids], dtype=bool)
    both_right = int((ca & cb).sum())
    only_a = int((ca & ~cb).sum())
    only_b = int((~ca & cb).sum())
    both_wrong = int((~ca & ~cb).sum())
    n = len(ids)
    out: dict[str, Any] = {"n": n, "n_only_in_a": sum(1 for i in a if i not in b),
                           "n_only_in_b": sum(1 for i in b if i not in a),
                           "both_right": both_right, "only_a": only_a, "only_b": only_b, "both_wrong": both_wrong}
    if n == 0:
        return out | {"accuracy_a": None, "accuracy_b": None, "diff": None, "ci95": None, "mcnemar_p": None}
    diff = ca.astype(float) - cb.astype(float)
    lo, hi = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    discordant = only_a + only_b
    p = float(binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    return out | {"accuracy_a": float(ca.mean()), "accuracy_b": float(cb.mean()), "diff": float(diff.mean()),
                  "ci95": [lo, hi], "mcnemar_p": p}
