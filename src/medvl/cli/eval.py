"""``medvl eval``: evaluate a model on a medical benchmark, re-score a run, compare two runs, or list what
is available."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _pairs(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    """``k=v`` pairs -> dict of text values; a pair without "=" or a key given twice is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint=flag)
        k, v = pair.split("=", 1)
        k = k.strip()
        if not k:
            raise click.BadParameter(f"{pair!r} has no key before '='", param_hint=flag)
        if k in out:
            raise click.BadParameter(f"{k!r} is given twice ({out[k]!r} and {v!r})", param_hint=flag)
        out[k] = v.strip()
    return out


def _options(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``k=v`` pairs -> dict; values parsed as YAML scalars (numbers, booleans), else kept as text (model
    adapter options; benchmark options stay text and are typed by the benchmark's option schema)."""
    import yaml

    out: dict[str, Any] = {}
    for k, v in _pairs(pairs, flag).items():
        try:
            val = yaml.safe_load(v)
        except yaml.YAMLError:
            val = v
        out[k] = val if isinstance(val, (bool, int, float)) else v
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _summary(res: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("scorer", "n", "accuracy %", "95% CI", "parse failures", "missing", "errors"):
        t.add_column(col)
    ci = res.get("ci95")
    t.add_row(str(res.get("scorer")), str(res.get("n")), _pct(res.get("accuracy")),
              f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "n/a",
              f"{res.get('parse_failures', 0)} ({_pct(res.get('parse_failure_rate'))}%)",
              str(len(res.get("missing_ids") or [])), str(len(res.get("error_ids") or [])))
    con = Console()
    con.print(t)
    spread = res.get("scorer_spread")
    if spread:
        s = Table(title="same predictions under every scorer")
        for col in ("scorer", "accuracy %", "95% CI", "parse failures", "fallback"):
            s.add_column(col)
        for name, v in sorted(spread["scorers"].items()):
            c = v.get("ci95")
            acc = "n/a (all fallback)" if v.get("all_fallback") else _pct(v.get("accuracy"))
            s.add_row(name, acc, f"{_pct(c[0])}–{_pct(c[1])}" if c else "n/a",
                      str(v.get("parse_failures")), str(v.get("fallback", 0)))
        con.print(s)
        con.print(f"spread between scorers: {_pct(spread.get('spread'))} points"
                  " (fallback = items the scorer does not support, scored by medvl instead; scorers whose"
                  " every item fell back are left out)")
    _skipped_summary(con, res.get("loader_skipped") or {})
    if res.get("missing_ids"):
        shown = ", ".join(res["missing_ids"][:10])
        con.print(f"[yellow]{len(res['missing_ids'])} unanswered (counted wrong): {shown}[/yellow]")
    if res.get("submission"):
        con.print(f"submission file: {res['submission']}")
    for k, v in (res.get("paths") or {}).items():
        con.print(f"{k}: {v}")


def _skipped_summary(con: Any, skipped: dict[str, Any]) -> None:
    """What the loader left out: rows it could not load (per reason code, a few examples) and rows an option
    did not select."""
    from rich.markup import escape

    if skipped.get("n"):
        codes = ", ".join(f"{k} {v}" for k, v in skipped["by_code"].items())
        con.print(f"[yellow]{skipped['n']} benchmark row(s) skipped while loading (not scored): {codes}[/yellow]")
        for ex in skipped.get("examples", [])[:3]:
            con.print(f"  {escape(ex['id'])}: {escape(ex['reason'])}")
        con.print(f"  every skipped row with its reason: {skipped.get('file')}")
    for why, n in (skipped.get("not_selected") or {}).items():
        con.print(f"{n} row(s) not selected: {escape(why)}")


def _list() -> None:
    from rich.console import Console

    from medvl.eval import _glue
    from medvl.eval.types import ADAPTERS, BENCHMARKS

    con = Console()
    con.print("[bold]benchmarks[/bold]")
    from rich.markup import escape

    from medvl.eval.benchmarks._options import describe_options

    for name in BENCHMARKS.names():
        b = BENCHMARKS.get(name)
        con.print(f"  {name}: {escape(b.description)} (splits {', '.join(b.splits)}; protocol {b.default_protocol})")
        lines = describe_options(b.Options) if getattr(b, "Options", None) is not None else []
        for line in lines:
            con.print(f"      --option {escape(line)}")
        if not lines:
            con.print("      (no options)")
    con.print("[bold]protocols[/bold]")
    for name in _glue.protocol_names():
        p = _glue.get_protocol(name)
        con.print(f"  {name}: {getattr(p, 'description', '')} (scorer {p.default_scorer}, {p.max_new_tokens} tokens)")
    con.print("[bold]scorers[/bold]\n  " + ", ".join(_glue.scorer_names()))
    con.print("[bold]model adapters[/bold]\n  " + ", ".join(f"{a}:..." for a in ADAPTERS.names()))


@click.command("eval")
@click.argument("benchmark", required=False)
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Benchmark data folder.")
@click.option("--model", "model_spec", help="hf:PATH | openai:NAME@URL | medvl:PATH | predictions:FILE")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder.")
@click.option("--protocol", default=None, help="Prompt protocol (default: the benchmark's).")
@click.option("--scorer", default=None, help="Scorer (default: the benchmark's or the protocol's).")
@click.option("--split", default=None, help="Benchmark split.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N items.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--option", "bench_opts", multiple=True,
              help="Benchmark option key=value (repeatable; lists comma-separated); see --list for each benchmark's.")
@click.option("--model-option", "model_opts", multiple=True,
              help="Adapter option key=value, e.g. concurrency=8, dtype=bfloat16 (repeatable).")
@click.option("--judge", default=None, help="LLM judge for unparsed replies: openai:NAME@URL.")
@click.option("--judge-open", is_flag=True, help="Also let the judge grade open-ended answers.")
@click.option("--no-resume", is_flag=True, help="Start over instead of resuming an interrupted run.")
@click.option("--rescore", "rescore_dir", type=click.Path(file_okay=False), help="Re-score a finished run folder.")
@click.option("--all-scorers", is_flag=True, help="With --rescore: every scorer side by side.")
@click.option("--compare", "compare_dirs", nargs=2, type=click.Path(file_okay=False), default=None,
              help="Paired comparison of two run folders.")
@click.option("--force", is_flag=True,
              help="With --compare: compare runs that differ in benchmark, split, options, protocol or scorer.")
@click.option("--list", "do_list", is_flag=True, help="List benchmarks, protocols, scorers and adapters.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def command(benchmark: str | None, data_dir: str | None, model_spec: str | None, out_dir: str | None,
            protocol: str | None, scorer: str | None, split: str | None, limit: int | None, batch_size: int,
            bench_opts: tuple[str, ...], model_opts: tuple[str, ...], judge: str | None, judge_open: bool,
            no_resume: bool, rescore_dir: str | None, all_scorers: bool, compare_dirs: tuple[str, str] | None,
            force: bool, do_list: bool, seed: int) -> None:
    """Evaluate a model (or re-score predictions) on a medical benchmark.

    \b
    medvl eval vqa-rad --data DIR --model hf:/models/llava -o runs/x
    medvl eval --rescore runs/x --all-scorers
    medvl eval --compare runs/x runs/y
    medvl eval --list
    """
    from medvl.eval import runner
    from medvl.eval.adapters._base import AdapterError
    from medvl.eval.adapters._images import ImageLoadError
    from medvl.eval.types import BenchmarkFormatError, BenchmarkOptionError

    expected = (runner.EvalRunError, AdapterError, BenchmarkFormatError, BenchmarkOptionError, ImageLoadError,
                KeyError, FileNotFoundError)
    try:
        if do_list:
            _list()
        elif compare_dirs:
            res = runner.compare(compare_dirs[0], compare_dirs[1], seed=seed, force=force)
            if res.get("differences"):
                click.echo(f"warning: --force: the runs differ in {', '.join(sorted(res['differences']))}; "
                           f"the paired difference is not a pure model difference", err=True)
            click.echo(json.dumps(res, indent=2, sort_keys=True, ensure_ascii=False))
        elif rescore_dir:
            if all_scorers == bool(scorer):
                raise click.UsageError("--rescore needs exactly one of --scorer S or --all-scorers")
            from medvl.eval import _glue

            names = _glue.scorer_names() if all_scorers else [scorer]
            res = runner.rescore_run(rescore_dir, names, seed=seed)
            _summary(res, f"{res['benchmark']} re-scored")
        else:
            missing = [f for f, v in (("BENCHMARK", benchmark), ("--data", data_dir), ("--model", model_spec),
                                      ("-o/--out", out_dir)) if not v]
            if missing:
                raise click.UsageError(f"missing {', '.join(missing)} (or use --rescore / --compare / --list)")
            res = _run(benchmark, data_dir, model_spec, out_dir, protocol, scorer, split, limit, batch_size,
                       _pairs(bench_opts, "--option"), _options(model_opts, "--model-option"), judge,
                       judge_open, not no_resume, seed)
            _summary(res, f"{benchmark} / {model_spec}")
    except expected as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise click.ClickException(" ".join(str(msg).split("\n"))) from e


def _run(benchmark: str, data_dir: str, model_spec: str, out_dir: str, protocol: str | None,
         scorer: str | None, split: str | None, limit: int | None, batch_size: int,
         bench_options: dict[str, Any], model_options: dict[str, Any], judge: str | None, judge_open: bool,
         resume: bool, seed: int) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from medvl.eval import runner

    bench_options = runner.effective_options(benchmark, bench_options)  # a bad option fails before any work
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(f"{benchmark}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return runner.run_eval(benchmark, Path(data_dir), model_spec, Path(out_dir), protocol=protocol,
                               scorer=scorer, split=split, limit=limit, batch_size=batch_size, resume=resume,
                               bench_options=bench_options, judge=judge, model_options=model_options,
                               progress=progress, seed=seed, judge_open=judge_open)
