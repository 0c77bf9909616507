"""``medvl bench-build BUILD_DIR -o OUT``: a GMAI-MMBench-style multiple-choice benchmark from built records."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table

from medvl.curate.benchquestions import GRANULARITIES, QUESTION_KINDS


@click.command(name="bench-build")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for bench.tsv, bench_manifest.json and skipped.jsonl.")
@click.option("--split", default="test", show_default=True,
              help="Use records of this split ('all' for every split).")
@click.option("--ask", default="labels", show_default=True,
              help="Comma-separated question kinds (" + ", ".join(QUESTION_KINDS) + "): labels = which label "
                   "(per dataset, at each --granularity); modality = which imaging modality (image level, "
                   "options from the split's modalities).")
@click.option("--per-label", type=int, default=50, show_default=True,
              help="At most N questions per dataset, granularity and answer label, and per answer modality "
                   "(0 = no limit).")
@click.option("--granularity", default=",".join(GRANULARITIES), show_default=True,
              help="Comma-separated perceptual granularities of label questions: " + ", ".join(GRANULARITIES) + ".")
@click.option("--options", "n_options", type=click.IntRange(2, 5), default=4, show_default=True,
              help="Options per question (fewer when the dataset has fewer labels / the split fewer modalities).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lang", default="en", show_default=True, help="Language of the question phrasing pool.")
def command(build_dir: Path, out_dir: Path, split: str, ask: str, per_label: int, granularity: str, n_options: int,
            seed: int, lang: str) -> None:
    """Make a GMAI-MMBench-style multiple-choice benchmark (bench.tsv) from a `medvl build` output."""
    from medvl.curate.benchbuild import BenchBuildConfig, build_benchmark
    from medvl.curate.benchquestions import PhrasePoolError

    grans = tuple(g.strip().lower() for g in granularity.split(",") if g.strip())
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in ask.split(",") if k.strip()))
    try:
        cfg = BenchBuildConfig(split=None if split.lower() == "all" else split, per_label=per_label or None,
                               granularities=grans, ask=kinds, n_options=n_options, seed=seed, lang=lang)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    console = Console()
    try:
        result = build_benchmark(build_dir, out_dir, cfg,
                                 progress=lambda it, n: track(it, total=n, description="drawing questions",
                                                              console=console, transient=True))
    except (FileNotFoundError, PhrasePoolError) as e:
        raise click.ClickException(str(e)) from None
    m = result.manifest
    for key, title in (("by_granularity", "granularity"), ("by_task", "clinical VQA task"),
                       ("by_modality", "modality"), ("by_department", "department"), ("by_answer", "answer letter")):
        table = Table(title=f"questions by {title}")
        table.add_column(title)
        table.add_column("questions", justify="right")
        for name, n in m[key].items():
            table.add_row(str(name), str(n))
        console.print(table)
    console.print(f"{m['questions']} questions from {m['records_in_split']} records "
                  f"(split: {cfg.split or 'all'}); {m['dropped_by_per_label']} dropped by --per-label; "
                  f"{m['skipped']} skipped {m['skipped_by_code']}")
    opts = ", ".join(f"{n}: {k}" for n, k in m["options_per_question"].items()) or "none"
    console.print(f"options per question (requested {cfg.n_options}): {opts}")
    small = m["small_label_spaces"]
    if small:
        names = ", ".join(f"{escape(d)} ({n} label{'s' if n != 1 else ''}{'' if n >= 2 else ', skipped'})"
                          for d, n in small.items())
        console.print(f"[yellow]warning: --options {cfg.n_options} requested, but these datasets have fewer "
                      f"labels, so their questions have fewer options: {names}[/yellow]", soft_wrap=True)
    if "modality" in cfg.ask:
        mods = sorted(set(m["modality_space"].values()))
        console.print(f"modalities of the split (options of modality questions): {escape(', '.join(mods)) or 'none'}")
        if len(mods) < cfg.n_options:
            tail = "they get fewer options" if len(mods) >= 2 else "modality questions skipped"
            console.print(f"[yellow]warning: --options {cfg.n_options} requested, but the split has "
                          f"{len(mods)} modalit{'y' if len(mods) == 1 else 'ies'}: {tail}[/yellow]", soft_wrap=True)
    console.print(f"wrote {result.tsv}, {result.manifest_path}, {result.skipped_path}")
