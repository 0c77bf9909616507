"""``medvl train CONFIG``: the three GMAI-VL stages (or the ones named) on medvl exports, resumable."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="train")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--stage", "stages", multiple=True, help="Run only this stage (repeatable); later stages start "
              "from the earlier stages' final/ folders.")
@click.option("--model", default=None, help="Override `model:` (the starting model folder).")
@click.option("--output-dir", default=None, help="Override `output_dir:`.")
@click.option("--resume", is_flag=True, help="Skip finished stages; continue an unfinished one from its last "
              "checkpoint (same data order, optimizer, scheduler and RNG state).")
@click.option("--overwrite", is_flag=True, help="Delete earlier output of the stages being run.")
def command(config_path: Path, stages: tuple[str, ...], model: str | None, output_dir: str | None, resume: bool,
            overwrite: bool) -> None:
    """Train a LLaVA model stage by stage from a YAML config (presets stage1, stage2, stage3; each key overridable).

    Example: medvl train train.yaml --resume

    Several GPUs or nodes: accelerate launch -m medvl.cli.main train train.yaml  (or torchrun -m ...)."""
    from medvl.cli._ui import console
    from medvl.train.config import TrainConfigError, load_config

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    overrides = {k: v for k, v in (("model", model), ("output_dir", output_dir)) if v is not None}
    try:
        cfg = load_config(config_path, overrides)
        from medvl.train.run import run

        results = run(cfg, only=list(stages) or None, resume=resume, overwrite=overwrite,
                      log=lambda m: console.print(m, soft_wrap=True, markup=False))
    except (TrainConfigError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    for r in results:
        loss = (r.summary.get("train") or {}).get("train_loss")
        console.print(f"{r.name}: {'skipped (done earlier)' if r.skipped else 'trained'}; "
                      f"final model {r.final}" + (f"; mean train loss {loss:.4f}" if isinstance(loss, float) else ""))
    if results:
        last = results[-1].final
        console.print(f"[bold green]done[/]: chat with it: medvl chat {last} --image IMAGE \"question\"; "
                      f"evaluate: medvl eval BENCH --model medvl:{last}")
