"""``medvl review BUILD``: judge a finished build with a model (``--judge``), or browse and grade it by hand
in a local web page (``--serve``)."""

from __future__ import annotations

from pathlib import Path

import click

EXIT_FAILED = 1  # at least one dataset failed or could not be judged (the report is written)


class ReviewUsageError(click.ClickException):
    exit_code = 2


@click.command(name="review")
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--judge", default=None, metavar="openai:NAME@URL",
              help="Judge model behind an OpenAI-compatible endpoint (key from $OPENAI_API_KEY or --api-key-env).")
@click.option("--samples", type=click.IntRange(1), default=30, show_default=True,
              help="Random samples judged per source dataset.")
@click.option("--pass-mean", type=click.FloatRange(1.0, 5.0), default=3.0, show_default=True,
              help="A dataset passes when its mean overall score (1 best, 5 worst) is at most this.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample choice.")
@click.option("--concurrency", type=click.IntRange(1), default=8, show_default=True,
              help="Judge requests in flight at once.")
@click.option("--worst", type=click.IntRange(0), default=5, show_default=True,
              help="Worst samples per dataset listed in the report.")
@click.option("--dataset", "datasets", multiple=True, help="Judge only this source dataset (repeatable).")
@click.option("--prompt", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A judge prompt YAML replacing the shipped one (medvl/review/data/judge_prompt.yaml).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the judge's API key.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds per judge HTTP attempt.")
@click.option("--dry-run", is_flag=True,
              help="With --judge: send nothing; print how many requests and prompt tokens the review would take.")
@click.option("--serve", is_flag=True, help="Serve the review page instead of judging (no judge needed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve: address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="With --serve: port (0 picks a free one).")
@click.option("--reindex", is_flag=True, help="With --serve: rebuild the page's index (BUILD/review/index.sqlite).")
def command(build: Path, judge: str | None, samples: int, pass_mean: float, seed: int, concurrency: int, worst: int,
            datasets: tuple[str, ...], prompt: Path | None, api_key_env: str, timeout: float, dry_run: bool,
            serve: bool, host: str, port: int, reindex: bool) -> None:
    """Review the quality of a finished build in BUILD.

    With --judge: per source dataset, --samples random samples (fixed by --seed) are sent with their images
    and the record's annotations to the judge model, scored 1 (best) to 5 (worst) on medical accuracy,
    language clarity, completeness and imaging relevance (GMAI-VL's rubric). Writes BUILD/review/report.json
    and report.md: means per dataset, pass/fail, the worst samples with the judge's comments and the recipe
    sources of failing datasets. Replies are cached in BUILD/review/cache: a re-run asks nothing twice.

    Exit status: 0 when every dataset passed; 1 when any dataset failed or could not be judged (the report is
    still written); 2 for bad usage or an unreadable build.

    With --serve: a local page to browse samples (images, boxes, masks), filter them, read rejects and grade
    samples by hand (1-5, j/k, c); grades go to BUILD/review/grades.jsonl.

    \b
    Examples:
      medvl review out/ --judge openai:gpt-4o@https://api.openai.com/v1
      medvl review out/ --serve --port 8765"""
    from medvl.cli._ui import console

    if serve == bool(judge):
        raise ReviewUsageError("give either --judge openai:NAME@URL (score samples with a model) or --serve "
                               "(browse and grade by hand)")
    if serve:
        _serve(build, host, port, reindex)
        return
    from medvl.review.judge import ReviewConfig, judge_build
    from medvl.review.report import make_report, write_report

    cfg = ReviewConfig(judge=judge, samples=samples, pass_mean=pass_mean, seed=seed, concurrency=concurrency,
                       worst=worst, prompt=prompt, api_key_env=api_key_env, timeout=timeout,
                       datasets=list(datasets) or None)
    if not (build / "samples.jsonl").is_file():
        raise ReviewUsageError(f"{build} is not a finished medvl build: samples.jsonl is missing")
    try:
        judged, usage = judge_build(build, cfg, dry_run=dry_run)
    except ValueError as e:
        raise ReviewUsageError(str(e)) from None
    if dry_run:
        chosen = sum(len(v) for v in judged.values())
        console.print(f"dry run: {chosen} samples chosen from {len(judged)} dataset(s); "
                      f"{usage.get('dry_run_requests', 0)} request(s) would be sent ({usage.get('cached', 0)} "
                      f"answered from the cache), about {usage.get('estimated_prompt_tokens', 0)} prompt tokens "
                      f"(images included) and at most {usage.get('estimated_completion_tokens', 0)} completion "
                      f"tokens, plus any re-asks. Nothing was sent; no report written.")
        return
    report = make_report(build.resolve(), cfg, judged, usage)
    js, md = write_report(build, report)
    _print(console, report)
    console.print(f"report: {md} (and {js.name})")
    if not report["passed"]:
        console.print(f"[red]failing: {', '.join(report['failing'])}[/red] (exit {EXIT_FAILED})")
        raise SystemExit(EXIT_FAILED)


def _print(console, report: dict) -> None:
    from rich.table import Table

    from medvl.review.judge import CRITERIA

    t = Table(title=f"judge review (1 best .. 5 worst; pass at <= {report['pass_mean']})")
    for col in ("dataset", "judged", "accuracy", "clarity", "completeness", "relevance", "overall", "result"):
        t.add_column(col)
    for ds, d in report["datasets"].items():
        m = d["mean"]
        t.add_row(ds, f"{d['judged']}/{d['chosen']}", *["n/a" if m[c] is None else f"{m[c]:.2f}" for c in CRITERIA],
                  "n/a" if m["overall"] is None else f"{m['overall']:.2f}", d["status"].upper())
    console.print(t)
    for r in report["regenerate"]:
        src = r["recipe_source"]
        where = f"recipe source {src['name']!r} ({src['format']}, {src['path']})" if src else "not in recipe.yaml"
        console.print(f"regenerate {r['dataset']}: {where}", markup=False)
    errors = [s for s in report["samples"] if "error" in s]
    if errors:
        console.print(f"{len(errors)} sample(s) could not be scored (listed in the report); first: "
                      f"{errors[0]['error'][:300]}", markup=False)
    u = report["usage"]
    console.print(f"judge: {u.get('requests', 0)} requests, {u.get('cached', 0)} cached, {u.get('reasks', 0)} "
                  f"re-asks, {u.get('retries', 0)} retries, {u.get('prompt_tokens', 0)}+"
                  f"{u.get('completion_tokens', 0)} tokens")


def _serve(build: Path, host: str, port: int, reindex: bool) -> None:
    from medvl.cli._ui import console
    from medvl.review.server import make_server
    from medvl.review.store import ReviewError

    try:
        httpd = make_server(build, host, port, rebuild_index=reindex)
    except ReviewError as e:
        raise ReviewUsageError(str(e)) from None
    except OSError as e:
        raise ReviewUsageError(f"cannot listen on {host}:{port}: {e}") from None
    h, p = httpd.server_address[:2]
    console.print(f"review page: http://{h}:{p}/  (grades: {build / 'review' / 'grades.jsonl'}; Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
