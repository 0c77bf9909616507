"""Metrics: accuracy and parse-failure counts, bootstrap CIs (determinism, coverage), paired comparison
with an exact McNemar test on a known contingency table, and the grouped results summary."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from medvl.eval.metrics import MISSING, accuracy, bootstrap_ci, paired_comparison, summarize


def _result(i: int, correct: bool | None, *, unparsed: bool = False, answer_type: str = "mc",
            lang: str = "en", score: float | None = None, **groups: str) -> dict:
    return {"id": f"q{i}", "correct": correct, "unparsed": unparsed, "answer_type": answer_type, "lang": lang,
            "score": float(bool(correct)) if score is None else score, "groups": groups}


def test_accuracy_counts() -> None:
    rs = [_result(0, True, modality="CT"), _result(1, False, unparsed=True, modality="CT"),
          _result(2, False, modality="MR"), _result(3, None, modality="MR"),
          _result(4, True, answer_type="open", score=1.0), _result(5, False, answer_type="open", score=0.5)]
    acc = accuracy(rs)
    assert (acc["n"], acc["n_scored"], acc["n_correct"], acc["n_unparsed"]) == (6, 5, 2, 1)
    assert acc["accuracy"] == pytest.approx(2 / 5) and acc["parse_failure_rate"] == pytest.approx(1 / 6)
    assert acc["mean_score_open"] == pytest.approx(0.75) and acc["n_open"] == 2
    by = acc["by_group"]["modality"]
    assert list(by) == ["(missing)", "CT", "MR"]
    assert by["CT"]["accuracy"] == 0.5 and by["MR"]["n_scored"] == 1 and by[MISSING]["n"] == 2
    assert sum(v["n"] for v in by.values()) == 6


def test_accuracy_empty_and_hidden() -> None:
    assert accuracy([])["accuracy"] is None
    hidden = accuracy([_result(0, None), _result(1, None)])
    assert hidden["accuracy"] is None and hidden["n"] == 2 and hidden["n_scored"] == 0


def test_bootstrap_deterministic_and_seed_dependent() -> None:
    values = (np.arange(300) % 3 == 0).astype(float)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi and hi - lo < 0.15
    cont = np.random.default_rng(0).normal(size=400)  # continuous values: index resampling path
    lo2, hi2 = bootstrap_ci(cont, n_boot=500, seed=1)
    assert lo2 < cont.mean() < hi2 and bootstrap_ci(cont, n_boot=500, seed=1) == (lo2, hi2)
    assert all(np.isnan(bootstrap_ci([])))
    assert bootstrap_ci([1.0] * 50) == (1.0, 1.0)


def test_bootstrap_coverage_sanity() -> None:
    """Percentile intervals of Bernoulli(0.7) samples of size 200 cover the true rate about 95% of the time."""
    rng = np.random.default_rng(123)
    hits = 0
    trials = 300
    for t in range(trials):
        sample = (rng.random(200) < 0.7).astype(float)
        lo, hi = bootstrap_ci(sample, n_boot=1000, seed=t)
        hits += lo <= 0.7 <= hi
    assert 0.89 <= hits / trials <= 0.99


def test_bootstrap_width_shrinks_with_alpha() -> None:
    values = (np.arange(500) % 4 != 0).astype(float)
    lo95, hi95 = bootstrap_ci(values, alpha=0.05)
    lo80, hi80 = bootstrap_ci(values, alpha=0.20)
    assert lo95 <= lo80 < hi80 <= hi95


def test_paired_comparison_known_table() -> None:
    # 2x2: both right 20, only a 10, only b 2, both wrong 8 (40 items)
    pattern = [(True, True)] * 20 + [(True, False)] * 10 + [(False, True)] * 2 + [(False, False)] * 8
    a = [_result(i, ca) for i, (ca, _) in enumerate(pattern)]
    b = [_result(i, cb) for i, (_, cb) in enumerate(pattern)][::-1]  # order must not matter
    out = paired_comparison(a, b, n_boot=2000, seed=0)
    assert (out["both_right"], out["only_a"], out["only_b"], out["both_wrong"]) == (20, 10, 2, 8)
    assert out["accuracy_a"] == 0.75 and out["accuracy_b"] == 0.55 and out["diff"] == pytest.approx(0.2)
    exact = 2 * sum(comb(12, k) for k in range(10, 13)) / 2**12  # two-sided exact binomial, p = 0.5
    assert out["mcnemar_p"] == pytest.approx(exact) and out["mcnemar_p"] == pytest.approx(0.03857421875)
    lo, hi = out["ci95"]
    assert lo < 0.2 < hi and lo > 0  # the paired interval excludes 0 here
    assert paired_comparison(a, b, n_boot=2000, seed=0) == out


def test_paired_comparison_unmatched_and_errors() -> None:
    a = [_result(0, True), _result(1, False), _result(2, None)]
    b = [_result(0, True), _result(3, True)]
    out = paired_comparison(a, b)
    assert out["n"] == 1 and out["n_only_in_a"] == 2 and out["n_only_in_b"] == 1 and out["mcnemar_p"] == 1.0
    assert paired_comparison([], [])["diff"] is None
    with pytest.raises(ValueError, match="twice"):
        paired_comparison([_result(0, True), _result(0, False)], b)


def test_summarize_structure() -> None:
    rs = [_result(i, i % 3 != 0, unparsed=i % 7 == 0, answer_type="closed" if i % 2 else "open",
                  lang="zh" if i % 5 == 0 else "en", modality=["CT", "MR", "X-Ray"][i % 3], task="organ")
          for i in range(60)]
    s = summarize(rs, group_keys=["modality"])
    assert list(s) == ["overall", "by_group", "by_answer_type", "by_lang"]
    assert list(s["by_group"]) == ["modality"] and list(s["by_group"]["modality"]) == ["CT", "MR", "X-Ray"]
    assert s["by_group"]["modality"]["CT"]["accuracy"] == 0.0
    assert s["by_group"]["modality"]["MR"]["accuracy"] == 1.0
    assert s["overall"]["n"] == 60 and s["overall"]["n_correct"] == 40
    assert sum(v["n"] for v in s["by_answer_type"].values()) == 60
    assert s["by_lang"]["zh"]["n"] == 12
    lo, hi = s["overall"]["ci95"]
    assert lo < 40 / 60 < hi
    assert list(summarize(rs)["by_group"]) == ["modality", "task"]
    assert json.dumps(summarize(rs), sort_keys=False) == json.dumps(summarize(list(rs)), sort_keys=False)
