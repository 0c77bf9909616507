"""`medvl build RECIPE -o OUT`: labelled datasets in, multimodal instruction data out."""

from __future__ import annotations

from pathlib import Path

import click


def run_and_report(recipe, out: Path, workers: int | None, overwrite: bool):
    from medvl.cli._ui import build_summary_table, console, progress_bar
    from medvl.pipeline.build import BuildError, run_build

    try:
        with progress_bar("reading sources") as update:
            result = run_build(recipe, out, workers=workers, overwrite=overwrite, progress=update)
    except BuildError as e:
        raise click.ClickException(str(e)) from None
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
@click.option("--overwrite", is_flag=True, help="Replace an earlier build in OUT.")
def command(recipe_path: Path, out: Path, workers: int | None, seed: int | None, exclude_file: Path | None,
            overwrite: bool) -> None:
    """Build multimodal instruction data from a YAML recipe.

    Example: medvl build recipe.yaml -o out/ --workers 2"""
    from medvl.pipeline.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    if seed is not None:
        recipe.seed = seed
    if exclude_file is not None:
        recipe.curation.exclude_file = str(exclude_file.resolve())
    run_and_report(recipe, out, workers, overwrite)
