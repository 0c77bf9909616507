"""The evaluation runner: benchmark items -> protocol prompts -> model adapter (batched) -> scorer -> files.

``run_eval`` writes to its output folder:
- ``samples.jsonl``: one scored sample per line, appended as batches finish, so an interrupted run resumes
  without re-asking finished samples; rewritten in benchmark order at the end (byte-identical reruns);
- ``results.json``: accuracy with a 95% bootstrap CI, parse failures, per-group summaries, config, and
  ``loader_skipped``: the rows the benchmark loader could not turn into items, counted per reason code;
- ``skipped.jsonl``: every such row (id, code, reason), in load order;
- ``report.html``: a self-contained report; ``submission`` files when the split hides its answers.
``rescore`` re-scores a finished run under another scorer (or all of them) without calling the model;
``compare`` runs a paired comparison of two runs on their shared items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import medvl
from medvl.eval import _glue
from medvl.eval.adapters._base import AdapterError, ModelAdapter, load_adapter
from medvl.eval.loading import (EvalRunError, effective_options, get_benchmark, load_items, skip_summary,
                                skipped_rows)
from medvl.eval.types import EvalItem, Request, ScoreResult

__all__ = ["EvalRunError", "compare", "effective_options", "get_benchmark", "load_items", "read_samples",
           "rescore", "rescore_run", "run_eval", "score_sample", "summarize_samples"]

SAMPLES = "samples.jsonl"
MODEL_CACHE = "model_cache"  # replies of an openai: model, so a resumed run asks nothing it had an answer to
SKIPPED = "skipped.jsonl"
RESULTS = "results.json"
REPORT = "report.html"
RUN_CONFIG = "run_config.json"
MAX_CONSECUTIVE_FAILURES = 3
Progress = Callable[[int, int], None]  # (samples done, total)


# ------------------------------------------------------------------------------------------ samples file

def read_samples(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Read a samples.jsonl. A truncated *last* line (interrupted write) is dropped — and cut from the file
    when ``repair`` — any other bad line is an error naming the line."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows: list[dict[str, Any]] = []
    good_bytes = 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_bytes += len(line) + (1 if i < len(lines) - 1 else 0)
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not an object with an 'id'")
        except ValueError as e:
            if all(not rest.strip() for rest in lines[i + 1 :]):
                if repair:
                    with path.open("r+b") as fh:
                        fh.truncate(good_bytes)
                break
            raise EvalRunError(f"{path}:{i + 1}: unreadable sample line ({e}); fix or delete the file") from e
        rows.append(row)
        good_bytes += len(line) + 1
    return rows


def _dump(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ scoring

def score_sample(item: EvalItem, prompt: str, response: str | None, scorer_name: str, scorer: Any,
                 judge: Any = None, error: str | None = None) -> dict[str, Any]:
    """One samples.jsonl row. ``response`` None = no answer (missing prediction or adapter error)."""
    hidden = item.answer is None
    if response is None:
        res = ScoreResult(parsed=None, correct=None if hidden else False, score=0.0, unparsed=True,
                          detail={"error": error} if error else {"missing": True})
    else:
        try:
            res = _glue.call_scorer(scorer, item, response)
        except Exception as e:  # a scorer bug on one item must not kill the run
            res = ScoreResult(parsed=None, correct=None if hidden else False, score=0.0, unparsed=True,
                              detail={"scorer_error": f"{type(e).__name__}: {e}"})
        if judge is not None and judge.wants(item, res):
            res = judge.resolve(item, response, res)
    row = {
        "id": item.id, "prompt": prompt, "response": response, "parsed": res.parsed,
        "correct": res.correct, "score": float(res.score), "unparsed": bool(res.unparsed),
        "answer": item.answer, "gold_text": item.gold_text, "answer_type": item.answer_type,
        "lang": item.lang, "groups": dict(sorted(item.groups.items())), "scorer": scorer_name,
        "detail": res.detail, "missing": response is None and error is None,
    }
    if error is not None:
        row["error"] = error
    return row


def _ask(adapter: ModelAdapter, reqs: list[Request], state: dict[str, int]) -> list[tuple[str | None, str | None]]:
    """Answers for a batch as (response, error). An adapter with ``generate_each`` answers per item (its client
    retried each request already), so an answered item is kept and never sent again; for the others a failing
    batch is retried item by item, so one bad item only fails itself. ``MAX_CONSECUTIVE_FAILURES`` failures in a
    row (server down, wrong model) abort the run after the batch's answers are written."""
    if hasattr(adapter, "generate_each"):
        out: list[tuple[str | None, str | None]] = []
        last: BaseException | None = None
        for res in adapter.generate_each(reqs):
            if isinstance(res, BaseException):
                state["streak"] += 1
                last = res
                out.append((None, f"{type(res).__name__}: {res}"))
            else:
                state["streak"] = 0
                out.append((res, None))
        if last is not None and state["streak"] >= MAX_CONSECUTIVE_FAILURES:
            state["abort"] = (f"the model failed on {state['streak']} requests in a row (finished samples are "
                              f"saved; rerun to resume); last error: {last}")
        return out
    try:
        answers = adapter.generate(reqs)
        if len(answers) != len(reqs):
            raise AdapterError(f"adapter returned {len(answers)} answers for {len(reqs)} requests")
        state["streak"] = 0
        return [(a, None) for a in answers]
    except Exception as e:
        first_error: Exception | None = e
    out: list[tuple[str | None, str | None]] = []
    for r in reqs:
        try:
            if len(reqs) == 1 and first_error is not None:
                raise first_error
            out.append((adapter.generate([r])[0], None))
            state["streak"] = 0
        except Exception as e:
            state["streak"] += 1
            out.append((None, f"{type(e).__name__}: {e}"))
            if state["streak"] >= MAX_CONSECUTIVE_FAILURES:
                raise EvalRunError(f"the model failed on {state['streak']} requests in a row "
                                   f"(finished samples are saved; rerun to resume); last error: {e}") from e
    return out


def _write_skipped(out: Path, rows: list[dict[str, str]]) -> None:
    (out / SKIPPED).write_text("".join(_dump(r) + "\n" for r in rows), encoding="utf-8")


# ------------------------------------------------------------------------------------------ summary

def summarize_samples(samples: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Overall accuracy (fraction correct of the items with a known gold, 95% bootstrap CI), mean score,
    parse failures (replies the scorer could not read; missing answers and model errors are listed
    separately) and per-group summaries (every group key the items carry, answer type, language)."""
    summ = _glue.summarize(samples, None, n_boot=n_boot, seed=seed)
    overall = summ["overall"]
    failures = [s["id"] for s in samples if s.get("unparsed") and not s.get("missing") and not s.get("error")]
    groups = dict(summ.get("by_group") or {})
    for key in ("answer_type", "lang"):
        if summ.get(f"by_{key}"):
            groups[key] = summ[f"by_{key}"]
    return {
        "n": len(samples),
        "n_scored": overall.get("n_scored", 0),
        "n_correct": overall.get("n_correct", 0),
        "accuracy": overall.get("accuracy"),
        "ci95": overall.get("ci95"),
        "mean_score": overall.get("mean_score"),
        "parse_failures": len(failures),
        "parse_failure_rate": len(failures) / len(samples) if samples else 0.0,
        "missing_ids": [s["id"] for s in samples if s.get("missing")],
        "error_ids": [s["id"] for s in samples if s.get("error")],
        "groups": groups,
    }


# ------------------------------------------------------------------------------------------ run

def run_eval(benchmark_name: str, data_dir: str | Path, model_spec: str, out_dir: str | Path,
             protocol: str | None = None, scorer: str | None = None, split: str | None = None,
             limit: int | None = None, batch_size: int = 8, resume: bool = True,
             bench_options: dict[str, Any] | None = None, judge: str | None = None,
             model_options: dict[str, Any] | None = None, adapter: ModelAdapter | None = None,
             progress: Progress | None = None, n_boot: int = 1000, seed: int = 0,
             judge_open: bool = False, judge_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model_spec`` (or a ready ``adapter``) on a benchmark; write samples, results and report."""
    bench_options = effective_options(benchmark_name, bench_options)
    bench, items = load_items(benchmark_name, data_dir, split, limit, bench_options)
    proto = _glue.get_protocol(protocol or bench.default_protocol)
    scorer_name = scorer or bench.default_scorer or proto.default_scorer
    scorer_obj = _glue.get_scorer(scorer_name)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "benchmark": benchmark_name, "data_dir": str(Path(data_dir).resolve()),
        "split": split or (bench.splits[0] if bench.splits else None),
        "limit": limit, "model": model_spec, "protocol": proto.name, "scorer": scorer_name,
        "bench_options": dict(sorted((bench_options or {}).items())), "judge": judge,
        "max_new_tokens": proto.max_new_tokens,
    }
    samples_path = out / SAMPLES
    if resume:
        _check_same_run(out / RUN_CONFIG, config)
        done = {r["id"]: r for r in read_samples(samples_path, repair=True) if not r.get("error")}
    else:
        done = {}
        samples_path.write_text("", encoding="utf-8")
        shutil.rmtree(out / MODEL_CACHE, ignore_errors=True)
    _write_json(out / RUN_CONFIG, config)
    skipped = skipped_rows(bench, data_dir)
    _write_skipped(out, skipped)

    by_id = {it.id: it for it in items}
    todo = [it for it in items if it.id not in done]
    if adapter is None and todo:
        options = dict(model_options or {})
        if model_spec.split(":", 1)[0].strip().lower() == "openai":  # every received reply on disk at once
            options.setdefault("cache_dir", str(out / MODEL_CACHE))
        adapter = load_adapter(model_spec, batch_size=batch_size, **options)
    judge_obj = _glue.make_judge(judge, out, judge_open, **(judge_options or {})) if judge else None
    if progress:
        progress(len(items) - len(todo), len(items))
    state = {"streak": 0}
    with samples_path.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), max(1, batch_size)):
            batch = todo[start : start + batch_size]
            reqs = [Request(id=it.id, prompt=proto.prompt(it), images=list(it.images),
                            max_new_tokens=proto.max_new_tokens) for it in batch]
            for it, req, (resp, err) in zip(batch, reqs, _ask(adapter, reqs, state)):  # type: ignore[arg-type]
                row = score_sample(_glue.pose(proto, it), req.prompt, resp, scorer_name, scorer_obj,
                                   judge_obj, err)
                done[it.id] = row
                fh.write(_dump(row) + "\n")
            fh.flush()
            if state.get("abort"):
                raise EvalRunError(state["abort"])
            if progress:
                progress(len(items) - len(todo) + start + len(batch), len(items))
    samples = [done[it.id] for it in items if it.id in done]
    samples_path.write_text("".join(_dump(s) + "\n" for s in samples), encoding="utf-8")

    results = _results(bench, benchmark_name, config, samples, n_boot, seed)
    results["loader_skipped"] = skip_summary(skipped, bench)
    if adapter is not None:
        results["model_info"] = adapter.describe()
        if hasattr(adapter, "unknown_ids"):
            extra = adapter.unknown_ids(set(by_id))
            results["unknown_prediction_ids"] = extra[:50]
            results["n_unknown_prediction_ids"] = len(extra)
    if judge_obj is not None:
        results["judge"] = judge_obj.stats()
    if any(it.answer is None for it in items):
        sub = bench.write_submission(samples, out)
        results["submission"] = str(sub) if sub else None
    return _finish(out, results, samples)


def _check_same_run(path: Path, config: dict[str, Any]) -> None:
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    try:  # a run recorded before options were typed: compare what its options meant
        old["bench_options"] = effective_options(str(old.get("benchmark")), old.get("bench_options"))
    except (EvalRunError, ValueError):
        pass
    keys = ("benchmark", "split", "model", "protocol", "scorer", "bench_options", "max_new_tokens")
    diff = [k for k in keys if old.get(k) != config.get(k)]
    if diff:
        raise EvalRunError(
            f"{path.parent} holds a run with a different {', '.join(diff)} "
            f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use --no-resume to overwrite it or another -o")


def _results(bench: Any, name: str, config: dict[str, Any], samples: list[dict[str, Any]],
             n_boot: int, seed: int) -> dict[str, Any]:
    res = {"benchmark": name, "description": getattr(bench, "description", ""), "split": config["split"],
           "model": config["model"], "protocol": config["protocol"], "scorer": config["scorer"],
           "config": config, "medvl_version": medvl.__version__}
    res.update(summarize_samples(samples, n_boot=n_boot, seed=seed))
    return res


def _finish(out: Path, results: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    from medvl.eval.report import write_report

    results["paths"] = {"samples": str(out / SAMPLES), "results": str(out / RESULTS), "report": str(out / REPORT)}
    if (out / SKIPPED).is_file():
        results["paths"]["skipped"] = str(out / SKIPPED)
    _write_json(out / RESULTS, results)
    write_report(out / REPORT, results, samples)
    return results


# ------------------------------------------------------------------------------------------ rescore

def rescore(samples_jsonl: str | Path, benchmark: str, data_dir: str | Path, scorer: str,
            split: str | None = None, bench_options: dict[str, Any] | None = None,
            protocol: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Re-score a finished run's responses under ``scorer`` (no model calls); items are posed as
    ``protocol`` asked them (default: the benchmark's). Returns a results dict with ``samples`` (the
    re-scored rows, benchmark order) and ``skipped_rows`` (the loader's skipped rows)."""
    rows = read_samples(Path(samples_jsonl))
    if not rows:
        raise EvalRunError(f"{samples_jsonl}: no samples to re-score")
    bench, items = load_items(benchmark, data_dir, split, None, bench_options)
    proto = _glue.get_protocol(protocol or bench.default_protocol)
    skipped = skipped_rows(bench, data_dir)
    by_id = {it.id: it for it in items}
    unknown = [r["id"] for r in rows if r["id"] not in by_id]
    if unknown:
        raise EvalRunError(f"{samples_jsonl}: {len(unknown)} sample id(s) not in {benchmark} "
                           f"(first: {unknown[0]!r}); wrong benchmark, split or data folder?")
    scorer_obj = _glue.get_scorer(scorer)
    have = {r["id"]: r for r in rows}
    new = []
    for it in items:
        if it.id in have:
            r = have[it.id]
            new.append(score_sample(_glue.pose(proto, it), r.get("prompt", ""), r.get("response"), scorer, scorer_obj,
                                    error=r.get("error")))
    res = {"benchmark": benchmark, "scorer": scorer, "medvl_version": medvl.__version__}
    res.update(summarize_samples(new, n_boot=n_boot, seed=seed))
    res["loader_skipped"] = skip_summary(skipped, bench)
    res["samples"], res["skipped_rows"] = new, skipped
    return res


def _spread_row(res: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One scorer's row of the scorer-spread table: accuracy, CI, parse failures, n, and ``fallback`` (items
    the scorer does not support and the medvl scorer scored instead). ``all_fallback``: every answered item
    fell back, so the scorer's own rules were never used; its accuracy and CI are then None (shown as
    "n/a (all fallback)") and it is left out of the spread."""
    row = {k: res[k] for k in ("accuracy", "ci95", "parse_failures", "parse_failure_rate", "n")}
    answered = [s for s in samples if s.get("response") is not None]
    fallback = sum(1 for s in answered if (s.get("detail") or {}).get("fallback"))
    row["fallback"] = fallback
    row["all_fallback"] = bool(answered) and fallback == len(answered)
    if row["all_fallback"]:
        row["accuracy"], row["ci95"] = None, None
    return row


def rescore_run(run_dir: str | Path, scorers: Iterable[str], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Re-score a run folder under each of ``scorers``. One scorer: files under ``rescored/<scorer>/``.
    Several: a side-by-side ``scorer_spread`` added to the run's results.json and report."""
    run = Path(run_dir).resolve()
    cfg_path = run / RUN_CONFIG
    if not cfg_path.is_file():
        raise EvalRunError(f"{run} is not a medvl eval output folder ({RUN_CONFIG} is missing)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    scorers = list(scorers)
    table: dict[str, Any] = {}
    for name in scorers:
        res = rescore(run / SAMPLES, cfg["benchmark"], cfg["data_dir"], name, cfg.get("split"),
                      cfg.get("bench_options"), cfg.get("protocol"), n_boot, seed)
        samples, skipped = res.pop("samples"), res.pop("skipped_rows")
        table[name] = _spread_row(res, samples)
        if len(scorers) == 1:
            sub = run / "rescored" / name
            sub.mkdir(parents=True, exist_ok=True)
            _write_skipped(sub, skipped)
            (sub / SAMPLES).write_text("".join(_dump(s) + "\n" for s in samples), encoding="utf-8")
            res.update({"model": cfg["model"], "protocol": cfg["protocol"], "split": cfg.get("split"),
                        "rescored_from": str(run / SAMPLES), "config": cfg})
            return _finish(sub, res, samples)
    # a scorer that scored nothing itself (every item fell back to medvl) is shown but not in the spread
    accs = [v["accuracy"] for v in table.values() if v["accuracy"] is not None and not v["all_fallback"]]
    spread = {"scorers": table, "spread": round(max(accs) - min(accs), 6) if accs else None,
              "excluded_all_fallback": sorted(k for k, v in table.items() if v["all_fallback"])}
    results = json.loads((run / RESULTS).read_text(encoding="utf-8"))
    results["scorer_spread"] = spread
    return _finish(run, results, read_samples(run / SAMPLES))


# ------------------------------------------------------------------------------------------ compare

COMPARABLE_FIELDS = ("benchmark", "split", "bench_options", "protocol", "scorer")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalRunError(f"{path}: unreadable ({e})") from e
    if not isinstance(obj, dict):
        raise EvalRunError(f"{path}: expected a JSON object")
    return obj


def run_identity(run_dir: Path, samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a run's scores depend on besides the model (``COMPARABLE_FIELDS`` plus ``data_dir``), read from
    ``run_config.json`` or ``results.json`` ``config``; the scorer is the one that scored the samples (a
    re-scored folder keeps the original run's config). None when the folder holds neither file."""
    cfg: dict[str, Any] = {}
    results: dict[str, Any] = {}
    if (run_dir / RESULTS).is_file():
        results = _read_json(run_dir / RESULTS)
        cfg.update(results.get("config") or {})
    if (run_dir / RUN_CONFIG).is_file():
        cfg.update(_read_json(run_dir / RUN_CONFIG))
    if not cfg and not results:
        return None
    ident = {k: cfg.get(k, results.get(k)) for k in COMPARABLE_FIELDS}
    ident["bench_options"] = dict(sorted((ident.get("bench_options") or {}).items()))
    scorers = sorted({str(s["scorer"]) for s in samples if s.get("scorer")})
    ident["scorer"] = ",".join(scorers) if scorers else results.get("scorer", cfg.get("scorer"))
    ident["data_dir"] = cfg.get("data_dir")
    return ident


def _differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if a is None or b is None:
        return {"config": {"a": "present" if a else "missing", "b": "present" if b else "missing"}}
    return {k: {"a": a.get(k), "b": b.get(k)} for k in COMPARABLE_FIELDS if a.get(k) != b.get(k)}


def compare(run_a_dir: str | Path, run_b_dir: str | Path, out_path: str | Path | None = None,
            n_boot: int = 1000, seed: int = 0, force: bool = False) -> dict[str, Any]:
    """Paired comparison of two runs on the items both answered (same ids); written as JSON.

    The runs must agree on benchmark, split, benchmark options, protocol and scorer (else the paired
    difference is not a model difference): otherwise an ``EvalRunError`` names the differing fields,
    unless ``force``, which records them under ``differences`` in the comparison."""
    a_dir, b_dir = Path(run_a_dir), Path(run_b_dir)
    rows_a, rows_b = read_samples(a_dir / SAMPLES), read_samples(b_dir / SAMPLES)
    if not rows_a or not rows_b:
        empty = a_dir if not rows_a else b_dir
        raise EvalRunError(f"{empty / SAMPLES}: no samples to compare")
    id_a, id_b = run_identity(a_dir, rows_a), run_identity(b_dir, rows_b)
    diff = _differences(id_a, id_b)
    if diff and not force:
        if "config" in diff:
            where = [str(d) for d, i in ((a_dir, id_a), (b_dir, id_b)) if i is None]
            raise EvalRunError(f"{' and '.join(where)}: no {RUN_CONFIG} or {RESULTS}, so the runs cannot be "
                               f"checked for comparability; use --force (force=True) to compare anyway")
        what = "; ".join(f"{k} differs (A: {v['a']!r}, B: {v['b']!r})" for k, v in diff.items())
        raise EvalRunError(f"{a_dir} and {b_dir} are not comparable: {what}. A paired difference would not "
                           f"be a model difference; use --force (force=True) to compare anyway")
    a = {r["id"]: r for r in rows_a if r.get("correct") is not None}
    b = {r["id"]: r for r in rows_b if r.get("correct") is not None}
    if not a or not b:
        empty = a_dir if not a else b_dir
        raise EvalRunError(f"{empty / SAMPLES}: no scored samples to compare (hidden answers?)")
    shared = [i for i in a if i in b]  # run A's (benchmark) order
    if not shared:
        raise EvalRunError(f"{a_dir} and {b_dir} share no question ids: different benchmarks or splits?")
    all_a, all_b = [r["id"] for r in rows_a], {r["id"] for r in rows_b}
    only_a = [i for i in all_a if i not in all_b]
    set_a = set(all_a)
    only_b = [r["id"] for r in rows_b if r["id"] not in set_a]
    ra, rb = [a[i] for i in shared], [b[i] for i in shared]
    res: dict[str, Any] = {
        "run_a": str(a_dir), "run_b": str(b_dir), "n_shared": len(shared),
        "n_missing_in_b": len(only_a), "n_missing_in_a": len(only_b),  # ids present in one run only
        "ids_missing_in_b": only_a[:20], "ids_missing_in_a": only_b[:20],
        "config_a": id_a, "config_b": id_b, "comparable": not diff, "forced": bool(force and diff),
    }
    if diff:
        res["differences"] = diff
    res.update(_glue.paired_comparison(ra, rb, n_boot=n_boot, seed=seed))
    path = Path(out_path) if out_path else a_dir / f"compare_{b_dir.name}.json"
    _write_json(path, res)
    res["path"] = str(path)
    return res
