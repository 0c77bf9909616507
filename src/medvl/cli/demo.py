"""`medvl demo OUT`: lay out a small real corpus from pip-shipped medical images, write its recipe, build it."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="demo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes for the build (default 1).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in OUT.")
def command(out: Path, workers: int | None, overwrite: bool) -> None:
    """Lay out a small real corpus (DICOM + SEG, CSV, COCO, Decathlon NIfTI, image folder, 2D masks) from
    medical images shipped in pip packages, write the recipe it used to OUT/recipe.yaml, build it into
    OUT/build, and print where everything is. Needs no network.

    Example: medvl demo demo_out/"""
    import shutil

    import yaml

    from medvl.cli._ui import console
    from medvl.cli.build import run_and_report
    from medvl.pipeline.recipe import RecipeError, load_recipe

    try:
        from medvl.demo.corpus import layout
    except ImportError as e:  # pragma: no cover - depends on the install
        raise click.ClickException(f"the demo needs the sample packages: pip install 'medvl[samples]' ({e})")
    out = out.resolve()
    corpus = out / "corpus"
    if corpus.exists():
        if not overwrite:
            raise click.ClickException(f"{corpus} exists; pass --overwrite to lay the demo out again")
        shutil.rmtree(corpus)
    console.print(f"laying out the demo corpus in {corpus} ...")
    recipe_dict = layout(corpus)
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_dict, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        recipe = load_recipe(recipe_path)
    except RecipeError as e:
        raise click.ClickException(str(e)) from None
    result = run_and_report(recipe, out / "build", workers, overwrite=True)
    console.print(f"corpus:  {corpus}\nrecipe:  {recipe_path}\nbuild:   {result.out_dir}\n"
                  f"card:    {result.out_dir / 'dataset_card.html'}\n"
                  f"rebuild: medvl build {recipe_path} -o {result.out_dir} --overwrite")
