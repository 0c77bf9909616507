"""``medvl audit TRAIN --bench NAME:DATA_DIR -o OUT``: find overlaps between training data and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import track
from rich.table import Table

from medvl.curate.phash import DHASH_THRESHOLD, PHASH_THRESHOLD


def _parse_bench(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition(":")
    if not sep or not name or not path:
        raise click.BadParameter(f"{spec!r}: expected NAME:DATA_DIR, e.g. vqa-rad:/data/vqa_rad", param_hint="--bench")
    return name.strip(), Path(path)


def _parse_options(specs: tuple[str, ...], names: list[str]) -> dict[str, dict[str, Any]]:
    """``k=v`` applies to every benchmark, ``NAME:k=v`` to one."""
    opts: dict[str, dict[str, Any]] = {n: {} for n in names}
    for spec in specs:
        target, colon, kv = spec.partition(":") if ":" in spec.split("=", 1)[0] else ("", "", spec)
        key, eq, value = kv.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{spec!r}: expected k=v or NAME:k=v", param_hint="--option")
        if colon and target not in opts:
            raise click.BadParameter(f"{spec!r}: benchmark {target!r} is not among --bench {names}", param_hint="--option")
        for n in ([target] if colon else names):
            opts[n][key.strip()] = value
    return opts


@click.command(name="audit")
@click.argument("train", type=click.Path(exists=True, path_type=Path))
@click.option("--bench", "benches", multiple=True, required=True, metavar="NAME:DATA_DIR",
              help="A benchmark to compare against (repeatable); NAME is a registered benchmark loader.")
@click.option("--option", "options", multiple=True, metavar="[NAME:]K=V",
              help="Loader option for every benchmark, or for NAME only (repeatable), e.g. split=test.")
@click.option("--all-splits", is_flag=True, help="Audit every split of a build output, not only train.")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder the image paths of a LLaVA JSON are relative to (default: the JSON's folder).")
@click.option("--phash-distance", type=click.IntRange(0, 32), default=PHASH_THRESHOLD, show_default=True,
              help="Largest pHash Hamming distance (of 64 bits) that counts as the same image (pHash OR dHash decides).")
@click.option("--dhash-distance", type=click.IntRange(0, 32), default=DHASH_THRESHOLD, show_default=True,
              help="Largest dHash Hamming distance (of 64 bits) that counts as the same image (pHash OR dHash decides).")
@click.option("--ngram-overlap", type=click.FloatRange(0.0, 1.0), default=0.8, show_default=True,
              help="Share of a benchmark question's word trigrams found in a training question to count as copied.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Processes for hashing.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder for overlaps.json and overlaps.md.")
def command(train: Path, benches: tuple[str, ...], options: tuple[str, ...], all_splits: bool, image_root: Path | None,
            phash_distance: int, dhash_distance: int, ngram_overlap: float, workers: int, out_dir: Path) -> None:
    """Find training images / questions that also occur in benchmarks (MD5, pixel MD5, pHash / dHash, question text).

    TRAIN is a `medvl build` output folder, a LLaVA JSON/JSONL file or a folder of images. Point a recipe's
    `curation.exclude_file` at the written overlaps.json to drop the overlapping training images."""
    from medvl.curate.audit import AuditConfig, load_benchmark, load_train, run_audit, write_audit

    console = Console()
    specs = [_parse_bench(b) for b in benches]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise click.BadParameter("each benchmark may be given once", param_hint="--bench")
    opts = _parse_options(options, names)
    try:
        ts = load_train(train, all_splits=all_splits, image_root=image_root)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    loaded = []
    for name, path in specs:
        try:
            loaded.append(load_benchmark(name, path, opts[name]))
        except (KeyError, ValueError, FileNotFoundError, TypeError) as e:
            raise click.ClickException(f"--bench {name}:{path}: {e}") from None
    cfg = AuditConfig(phash_distance=phash_distance, dhash_distance=dhash_distance, ngram_overlap=ngram_overlap, workers=workers)

    def progress(it: Any, n: int, what: str) -> Any:
        return track(it, total=n, description=what, console=console, transient=True)

    result = run_audit(ts, loaded, cfg, progress=progress)
    jpath, mpath = write_audit(result, out_dir)
    s = result.summary
    table = Table(title="overlaps by benchmark")
    for col in ("benchmark", "items", "items with overlap", "md5", "pHash/dHash", "question"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, b in s["benchmarks"].items():
        m = b["by_match"]
        table.add_row(name, str(b["items"]), str(b["items_with_overlap"]), str(m["md5"]), str(m["perceptual"]), str(m["question"]))
    console.print(table)
    console.print(f"{s['train']['images']} training images ({s['train']['source']}), {s['benchmark_images']} benchmark "
                  f"images: {s['overlaps']} overlaps on {s['train_images_to_exclude']} training images; "
                  f"{len(result.errors)} unreadable inputs")
    console.print(f"wrote {jpath} and {mpath}; exclude them with `curation: {{exclude_file: {jpath}}}` in the recipe")
