"""Loading a benchmark for a run: the loader object, its typed options with defaults filled in, the items
(ids checked unique), and what the loader skipped, as rows and as the counts results.json reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.eval.types import BENCHMARKS, EvalItem

SKIPPED = "skipped.jsonl"
MAX_SKIP_EXAMPLES = 20


class EvalRunError(RuntimeError):
    """A run that cannot start or continue; the message names the file or setting at fault."""


def get_benchmark(benchmark: str) -> Any:
    """A fresh loader object for ``benchmark``; ``EvalRunError`` listing the known names otherwise."""
    try:
        return BENCHMARKS.get(benchmark)()
    except KeyError as e:
        raise EvalRunError(str(e.args[0])) from e


def effective_options(benchmark: str, bench_options: dict[str, Any] | None) -> dict[str, Any]:
    """The options a load of ``benchmark`` uses, typed and with defaults filled in (what a run records, so
    ``subjects=A,B`` on the command line and ``["A", "B"]`` from Python are the same run). Raises
    ``BenchmarkOptionError`` for an unknown option or a bad value."""
    from medvl.eval.benchmarks._options import parse_options

    model = getattr(get_benchmark(benchmark), "Options", None)
    if model is None:
        return dict(sorted((bench_options or {}).items()))
    return parse_options(benchmark, model, bench_options).model_dump(mode="json")


def load_items(benchmark: str, data_dir: str | Path, split: str | None = None, limit: int | None = None,
               bench_options: dict[str, Any] | None = None) -> tuple[Any, list[EvalItem]]:
    """The benchmark object and its items (first ``limit`` in published order); ids must be unique. The
    object's ``skipped`` lists the rows it could not load (see ``skip_summary``)."""
    bench = get_benchmark(benchmark)
    items = bench.load(Path(data_dir), split=split, **(bench_options or {}))
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise EvalRunError(f"{benchmark} in {data_dir}: duplicate question id {it.id!r}")
        seen.add(it.id)
    if limit is not None:
        items = items[: max(0, int(limit))]
    return bench, items


def skipped_rows(bench: Any, data_dir: str | Path) -> list[dict[str, str]]:
    """The loader's skipped rows as ``{"id", "code", "reason"}`` (load order); paths inside the data folder
    are written relative to it."""
    root = str(Path(data_dir).expanduser().resolve()) + "/"
    return [{"id": str(s[0]), "code": getattr(s, "code", "other"), "reason": str(s[1]).replace(root, "")}
            for s in getattr(bench, "skipped", None) or []]


def skip_summary(rows: list[dict[str, str]], bench: Any = None) -> dict[str, Any]:
    """``{"n", "by_code", "examples", "file"}`` for results.json (plus ``not_selected``: rows an option
    left out on purpose, e.g. SLAKE's Chinese questions under ``lang=en``)."""
    by_code: dict[str, int] = {}
    for r in rows:
        by_code[r["code"]] = by_code.get(r["code"], 0) + 1
    out: dict[str, Any] = {"n": len(rows), "by_code": dict(sorted(by_code.items())),
                           "examples": rows[:MAX_SKIP_EXAMPLES], "file": SKIPPED}
    not_selected = dict(sorted((getattr(bench, "not_selected", None) or {}).items()))
    if not_selected:
        out["not_selected"] = not_selected
    return out
