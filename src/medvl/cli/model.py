"""``medvl model init OUT``: assemble a LLaVA model from a vision tower, a language model and a fresh projector."""

from __future__ import annotations

from pathlib import Path

import click

from medvl.model.assemble import PRETRAINED_LMS, PRETRAINED_TOWERS, TINY_LMS, TINY_TOWERS


@click.group(name="model")
def command() -> None:
    """Assemble models from parts (and convert the offline pretrained parts shipped in pip packages)."""


@command.command(name="init")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--vision", required=True,
              help="Vision tower: a transformers folder (CLIP, SigLIP, DINOv2 vision model) or one of "
                   + ", ".join(PRETRAINED_TOWERS + TINY_TOWERS) + ".")
@click.option("--lm", required=True,
              help="Causal language model folder (with tokenizer) or one of " + ", ".join(PRETRAINED_LMS + TINY_LMS) + ".")
@click.option("--feature-layer", type=int, default=-2, show_default=True,
              help="Vision hidden state fed to the projector (-2: second-to-last).")
@click.option("--select", type=click.Choice(["auto", "default", "full"]), default="auto", show_default=True,
              help="default drops the class token, full keeps every token; auto picks default when there is one.")
@click.option("--image-size", type=click.IntRange(16), default=None,
              help="Input size in pixels (default: the tower's; 224 for DINOv2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the projector's initialisation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder OUT.")
def init(out: Path, vision: str, lm: str, feature_layer: int, select: str, image_size: int | None, seed: int,
         overwrite: bool) -> None:
    """Save a new model folder: the tower and LM weights, a fresh 2-layer GELU projector, the processor
    (pad to square with the mean colour, resize) and the ChatML template. The folder is plain transformers.

    Example: medvl model init models/init --vision clip-b16 --lm smollm2-135m"""
    import shutil

    from medvl.cli._ui import console
    from medvl.model.assemble import AssemblyError, ModelSpec, init_model
    from medvl.model.pretrained import ConversionError

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise click.ClickException(f"{out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    spec = ModelSpec(vision=vision, lm=lm, feature_layer=feature_layer, select=select, image_size=image_size,
                     seed=seed)
    try:
        folder = init_model(spec, out)
    except (AssemblyError, ConversionError, FileNotFoundError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    import json

    meta = json.loads((folder / "medvl_model.json").read_text(encoding="utf-8"))
    console.print(f"[bold green]saved[/] {folder}: {meta['image_tokens']} image tokens per image\n"
                  f"chat:  medvl chat {folder} --image IMAGE \"question\"\n"
                  f"train: set `model: {folder}` in a training config, then medvl train CONFIG")
