"""`medvl demo OUT`: lay out a small real corpus from pip-shipped medical images, write its recipe, build it."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="demo")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes for the build (default 1).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo in OUT.")
@click.option("--train", "train", is_flag=True,
              help="Also train: build with held-out images, make multiple-choice questions from them, assemble "
                   "CLIP ViT-B/16 + SmolLM2-135M, train stages I-III, evaluate before and after each stage "
                   "(about half an hour on 2 cores); writes OUT/train_report.md.")
@click.option("--tiny", is_flag=True, help="With --train: tiny random parts and a few steps (a smoke run).")
def command(out: Path, workers: int | None, overwrite: bool, train: bool, tiny: bool) -> None:
    """Lay out a small real corpus (DICOM + SEG, CSV, COCO, Decathlon NIfTI, image folder, 2D masks) from
    medical images shipped in pip packages, write the recipe it used to OUT/recipe.yaml, build it into
    OUT/build, and print where everything is. Needs no network.

    Example: medvl demo demo_out/      (training: medvl demo train_out/ --train)"""
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
    if tiny and not train:
        raise click.UsageError("--tiny only applies with --train")
    if train:
        _train(out, overwrite, tiny)
        return
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


def _train(out: Path, overwrite: bool, tiny: bool) -> None:
    """The training path: see :mod:`medvl.demo.train`."""
    import shutil

    from medvl.cli._ui import console
    from medvl.demo.train import DemoPlan, run_training_demo

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise click.ClickException(f"{out} is not empty; pass --overwrite to run the training demo again")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.tiny() if tiny else DemoPlan()
    try:
        report = run_training_demo(out, plan, log=lambda m: console.print(m, soft_wrap=True, markup=False))
    except (ImportError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    console.print((out / "train_report.md").read_text(encoding="utf-8"), markup=False)
    console.print(f"report: {out / 'train_report.md'}; models: {out / 'train'}; "
                  f"{report['questions']} questions: {out / 'bench' / 'bench.tsv'}")
