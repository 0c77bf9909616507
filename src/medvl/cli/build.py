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
    if timings is not None:
        t = {**{k: round(v, 3) for k, v in result.timings.items()}, "units": result.summary["units"]["input"],
             "records": result.summary["records"], "samples": result.summary["samples"]}
        timings.write_text(json.dumps(t, indent=1) + "\n", encoding="utf-8")
    s = result.summary
    console.print(build_summary_table(s))
    console.print(f"records {s['records']}  samples {s['samples']}  rejects {s['rejects']} "
                  f"(by stage: {s['rejects_by_stage']})")
    console.print(f"modalities: {s['records_by_modality']}")
    console.print(f"splits: {s['records_by_split']}   kinds: {s['samples_by_kind']}   languages: {s['samples_by_lang']}")
    for w in s.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}")
    console.print(f"[bold green]done[/]: outputs in {result.out_dir} (manifest.json lists every file; "
                  f"rejects.jsonl lists every rejected item with its reason)")
    return result


@click.command(name="build")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder.")
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
@click.option("--chunk-records", type=click.IntRange(1), default=2000, show_default=True,
              help="Records per generation task.")
@click.option("--bucket-records", type=click.IntRange(1), default=20000, show_default=True,
              help="Records per curation bucket (dedup runs per bucket in memory).")
@click.option("--timings", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write per-stage wall times (JSON) here.")
def command(recipe_path: Path, out: Path, workers: int | None, seed: int | None, exclude_file: Path | None,
            overwrite: bool, resume: bool, executor: str, ray_address: str | None, shard_units: int,
            chunk_records: int, bucket_records: int, timings: Path | None) -> None:
    """Build multimodal instruction data from a YAML recipe.

    Example: medvl build recipe.yaml -o out/ --workers 2

    Shard sizes change speed and memory, never outputs; --resume needs the same recipe and shard sizes."""
    from medvl.pipeline.steps import RunOptions

    from medvl.pipeline.recipe import RecipeError, load_recipe

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
                     chunk_records=chunk_records, bucket_records=bucket_records)
    run_and_report(recipe, out, workers, overwrite, run, timings)
