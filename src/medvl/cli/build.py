"""`medvl build RECIPE -o OUT`: labelled datasets in, multimodal instruction data out."""

from __future__ import annotations

from pathlib import Path

import click


def run_and_report(recipe, out: Path, workers: int | None, overwrite: bool, run=None, timings: Path | None = None):
    import json

    from medvl.cli._ui import build_summary_table, console, progress_bar
    from medvl.executor import ExecutorError
    from medvl.pipeline.build import BuildError, run_build

    try:
        with progress_bar("reading sources") as update:
            result = run_build(recipe, out, workers=workers, overwrite=overwrite, progress=update, run=run)
    except (BuildError, ExecutorError) as e:
        raise click.ClickException(str(e)) from None
    if run is not None and run.dry_run:
        _report_dry_run(result)
        return result
    if timings is not None:
        t = {**{k: round(v, 3) for k, v in result.timings.items()}, "units": result.summary["units"]["input"],
             "records": result.summary["records"], "samples": result.summary["samples"],
             **({"model_run": result.model_run} if result.model_run else {})}
        timings.write_text(json.dumps(t, indent=1) + "\n", encoding="utf-8")
    s = result.summary
    console.print(build_summary_table(s))
    console.print(f"records {s['records']}  samples {s['samples']}  rejects {s['rejects']} "
                  f"(by stage: {s['rejects_by_stage']})")
    console.print(f"modalities: {s['records_by_modality']}")
    console.print(f"splits: {s['records_by_split']}   kinds: {s['samples_by_kind']}   languages: {s['samples_by_lang']}")
    if result.model_run:
        m, mg = result.model_run, s.get("model_generation", {})
        console.print(f"model {mg.get('model')}: this run sent {m['requests'] + m['reasks']} request(s) "
                      f"({m['reasks']} re-asks, {m['retries']} retries), {m['cached']} answered from the cache; "
                      f"the samples' replies: {mg.get('prompt_tokens', 0)} + {mg.get('completion_tokens', 0)} tokens, "
                      f"cost {mg.get('cost', 0)}")
    for w in s.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}")
    console.print(f"[bold green]done[/]: outputs in {result.out_dir} (manifest.json lists every file; "
                  f"rejects.jsonl lists every rejected item with its reason)")
    return result


@click.command(name="build")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True,
              help="Output folder, or a URL (s3://bucket/prefix, gs://..., any fsspec or pyarrow filesystem): the "
                   "build then runs in a local staging folder and is published to the URL when it is finished.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes (default: recipe `workers`).")
@click.option("--seed", type=int, default=None, help="Override the recipe seed.")
@click.option("--exclude", "exclude_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Drop images listed here (MD5 per line, or `medvl audit` overlaps.json).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier build in OUT (its images are reused).")
@click.option("--resume", is_flag=True, help="Finish an interrupted build in OUT, redoing only unfinished units.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where tasks run: this machine's process pool, or Ray (needs the medvl[ray] extra).")
@click.option("--ray-address", default=None, help="Join this Ray cluster (e.g. `auto`); default: start a local Ray.")
@click.option("--shard-units", type=click.IntRange(1), default=64, show_default=True,
              help="Source units per read task.")
@click.option("--chunk-records", type=click.IntRange(1), default=500, show_default=True,
              help="Records per generation task.")
@click.option("--bucket-records", type=click.IntRange(1), default=20000, show_default=True,
              help="Records per curation bucket (dedup runs per bucket in memory).")
@click.option("--dry-run", is_flag=True,
              help="Read and curate, then list the model requests generation would send (dry-run/requests.jsonl) "
                   "with their estimated tokens and cost; nothing is sent and no outputs are written.")
@click.option("--timings", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write per-stage wall times (JSON) here.")
@click.option("--staging", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With a URL output: the local folder the build runs in (default: one per URL under "
                   "$MEDVL_CACHE/staging or ~/.cache/medvl/staging, so --resume finds it).")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="With a URL output: an fsspec storage option, repeatable (e.g. endpoint_url=http://..., "
                   "client_kwargs.region_name=eu-west-1). Credentials are better left to the environment.")
def command(recipe_path: Path, out: str, workers: int | None, seed: int | None, exclude_file: Path | None,
            overwrite: bool, resume: bool, executor: str, ray_address: str | None, shard_units: int,
            chunk_records: int, bucket_records: int, timings: Path | None, staging: Path | None,
            storage_options: tuple[str, ...], dry_run: bool) -> None:
    """Build multimodal instruction data from a YAML recipe.

    Example: medvl build recipe.yaml -o out/ --workers 2

    To object storage: medvl build recipe.yaml -o s3://bucket/builds/v1 --storage-option endpoint_url=http://minio:9000

    Shard sizes change speed and memory, never outputs; --resume needs the same recipe and shard sizes."""
    from medvl.executor.local import discard_prestarted, prestart

    if executor == "local":  # the workers start while this process imports and parses the recipe
        prestart(workers or _recipe_workers(recipe_path), PRESTART_MODULES)
    try:
        _command(recipe_path, out, workers, seed, exclude_file, overwrite, resume, executor, ray_address, shard_units,
                 chunk_records, bucket_records, timings, staging, storage_options, dry_run)
    finally:
        discard_prestarted()


PRESTART_MODULES = ("medvl.sources.read",)
"""What each prestarted worker imports while ``medvl build`` imports and parses the recipe: the read stage's modules
(~0.3 s a worker). The later stages' modules are imported during curation, when the workers would idle
(``pipeline.steps.LATER_MODULES``): importing them here too kept the first read task waiting for the workers in
some runs (three processes importing on two cores)."""


def _recipe_workers(path: Path) -> int:
    """The recipe's top-level ``workers`` read with a bare YAML load (1 when absent or unreadable: the real parse,
    which reports every problem, comes later)."""
    import yaml

    try:
        n = yaml.safe_load(path.read_text(encoding="utf-8")).get("workers", 1)
    except Exception:  # noqa: BLE001 - only decides whether to start workers early
        return 1
    return n if isinstance(n, int) else 1


def _command(recipe_path: Path, out: str, workers: int | None, seed: int | None, exclude_file: Path | None,
             overwrite: bool, resume: bool, executor: str, ray_address: str | None, shard_units: int,
             chunk_records: int, bucket_records: int, timings: Path | None, staging: Path | None,
             storage_options: tuple[str, ...], dry_run: bool) -> None:
    from medvl.io.storage import is_url
    from medvl.pipeline.recipe import RecipeError, load_recipe
    from medvl.pipeline.steps import RunOptions

    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if seed is not None:
        recipe.seed = seed
    if exclude_file is not None:
        recipe.curation.exclude_file = str(exclude_file.resolve())
    if executor == "local" and ray_address:
        raise click.UsageError("--ray-address needs --executor ray")
    run = RunOptions(executor=executor, ray_address=ray_address, resume=resume, shard_units=shard_units,
                     chunk_records=chunk_records, bucket_records=bucket_records, dry_run=dry_run)
    if dry_run and is_url(out):
        raise click.UsageError("--dry-run writes its listing to a local folder; pass a local -o/--out")
    if not is_url(out):
        if staging is not None or storage_options:
            raise click.UsageError("--staging and --storage-option apply only when -o/--out is a URL")
        if Path(out).exists() and not Path(out).is_dir():
            raise click.UsageError(f"-o/--out: {out} is a file, not a folder")
        run_and_report(recipe, Path(out), workers, overwrite, run, timings)
        return
    _build_and_publish(recipe, out, staging, storage_options, workers, overwrite, run, timings)


def _report_dry_run(result) -> None:
    import json

    from medvl.cli._ui import console

    s = result.summary
    folder = result.out_dir / "dry-run"
    shown = 0
    for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines()[:3]:
        r = json.loads(line)
        text = " | ".join(p.get("text", f"<image {p.get('sha256', '')[:12]}>") if isinstance(p, dict) else str(p)
                          for m in r["messages"] for p in (m["content"] if isinstance(m["content"], list)
                                                          else [{"text": m["content"]}]))
        console.print(f"[bold]{r['tag']}[/] -> {r['model']} ({r['max_tokens']} max tokens): {text[:400]}")
        shown += 1
    console.print(f"dry run: {s['requests']} request(s) would be sent"
                  + (f" to {s['model']} at {s['endpoint']} ({s['cached']} already cached); estimated "
                     f"{s['estimated_prompt_tokens']} prompt + at most {s['estimated_completion_tokens']} completion "
                     f"tokens, cost <= {s['estimated_cost']}" if "model" in s else ""))
    console.print(f"every request: {folder / 'requests.jsonl'}; read and curate are kept: run the same command "
                  f"without --dry-run and with --resume to build")


STAGED = ".medvl-staged.json"  # in a staging folder: which recipe its finished build is of (hidden: not published)


def _finished(local: Path, recipe) -> bool:
    """True when ``local`` holds a finished build of this very recipe (recorded in ``STAGED`` when the build
    finished), so a publish that stopped is resumed; a finished build of another recipe is an error: a resume
    never publishes the wrong data."""
    import json

    from medvl.pipeline.workdir import WORK, recipe_sha256

    if not (local / "manifest.json").is_file() or (local / WORK).exists():
        return False
    staged = local / STAGED
    made_by = json.loads(staged.read_text(encoding="utf-8")).get("recipe_sha256") if staged.is_file() else None
    if made_by != recipe_sha256(recipe):
        raise click.ClickException(f"{local}: holds a finished build of a different recipe (or seed); pass "
                                   "--overwrite to rebuild it")
    return True


def _build_and_publish(recipe, url: str, staging: Path | None, pairs: tuple[str, ...], workers: int | None,
                       overwrite: bool, run, timings: Path | None) -> None:
    """Build in a local staging folder, then publish the finished build to ``url`` (io.storage.publish).
    A build or a publish that stopped is continued by running the same command with --resume."""
    import json

    from medvl.cli._ui import console, progress_bar
    from medvl.io.storage import PublishError, display_url, parse_storage_options, publish, staging_dir

    try:
        options = parse_storage_options(list(pairs))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    local = (staging or staging_dir(url)).resolve()
    if run.resume and not overwrite and _finished(local, recipe):
        console.print(f"the build in {local} is finished; publishing it")
    else:
        from medvl.pipeline.workdir import recipe_sha256

        (local / STAGED).unlink(missing_ok=True)
        run_and_report(recipe, local, workers, overwrite, run, timings)

        (local / STAGED).write_text(json.dumps({"recipe_sha256": recipe_sha256(recipe)}) + "\n", encoding="utf-8")
    try:
        with progress_bar(f"publishing to {display_url(url)}") as update:
            report = publish(local, url, storage_options=options, workers=8,
                             progress=lambda done, total: update(done, total))
    except PublishError as e:
        raise click.ClickException(f"{e}\nthe build is complete in {local}; run the same command with --resume "
                                   "to publish it again (only missing files are sent)") from None
    console.print(f"[bold green]published[/]: {report.files} files to {report.url} ({report.uploaded} uploaded, "
                  f"{report.skipped} already there; {report.bytes_uploaded / 1e6:.1f} MB in {report.seconds:.1f} s);"
                  f" the local build stays in {local}")
