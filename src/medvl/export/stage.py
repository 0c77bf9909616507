"""The export stage as executor tasks: each export (LLaVA JSON, messages, Parquet, mixture, WebDataset) reads
the build's shards through a :class:`~medvl.export.corpus.ShardCorpus` and writes its own files, so the
exports of one build run side by side in the executor's workers. The card describes the others' files and
runs after them (in the orchestrator). A task returns its manifest entries and the SHA-256 of every file it
wrote (computed in the worker: hashing gigabytes of shards is work too), which the orchestrator journals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# expensive exports first, so that the long ones do not start last (results are still taken in recipe order);
# "card-tally" is the card's counting pass (and its plots), run beside the exports, handed out last because it reads
# the build's tables, which the orchestrator writes while the other tasks run (the card itself is written after them)
CARD_TALLY = "card-tally"
COST_ORDER = ("webdataset", "parquet", "llava", "messages", "mixture")
PER_SPLIT = ("webdataset", "parquet")
"""Exports that embed the images (the long ones) and take a ``split`` argument: one task per split, so that
two workers are not left with one long task each at the end of the stage."""


@dataclass
class ExportTask:
    name: str  # registered export name
    corpus: Any  # a picklable Corpus (ShardCorpus: paths only)
    out_dir: str
    recipe: Any
    options: dict[str, Any] = field(default_factory=dict)
    split: str | None = None  # one split of a PER_SPLIT export (None: every split)


@dataclass
class ExportResult:
    name: str
    entries: list[dict[str, Any]]  # ManifestEntry.to_dict() of each
    shas: dict[str, str]  # path relative to out_dir -> sha256, for every file entry
    error: str | None = None  # a data error (two samples with one id) to report as a build error
    tally: Any = None  # the card's counts (CARD_TALLY tasks)
    split: str | None = None
    plots: dict[str, bytes] | None = None  # the card's bar charts, drawn from the counts (CARD_TALLY tasks)


def run_export_task(task: ExportTask) -> ExportResult:
    """Run one export (in a worker); errors other than a duplicate sample id propagate as task errors."""
    from medvl.export.base import EXPORTS
    from medvl.export.corpus import DuplicateSampleId

    out_dir = Path(task.out_dir)
    if task.name == CARD_TALLY:  # task.options are the card's
        from medvl.export.card import corpus_tally, plots

        try:
            counts = corpus_tally(task.corpus, out_dir)
        except DuplicateSampleId as e:
            return ExportResult(task.name, [], {}, error=str(e))
        return ExportResult(task.name, [], {}, tally=counts, plots=plots(counts, dict(task.options)))
    part = {} if task.split is None else {"split": task.split}
    try:
        new = EXPORTS.get(task.name)(task.corpus, out_dir, task.recipe, options=dict(task.options), entries=[], **part)
    except DuplicateSampleId as e:
        return ExportResult(task.name, [], {}, error=str(e), split=task.split)
    return ExportResult(task.name, [e.to_dict() for e in new], written_shas(new, out_dir), split=task.split)


def written_shas(entries: list[Any], out_dir: Path) -> dict[str, str]:
    """SHA-256 of every file the manifest entries of one export name (folders have none)."""
    from medvl.core.hashing import file_digest

    return {e.path: file_digest(out_dir / e.path) for e in entries if (out_dir / e.path).is_file()}


def entry_from_dict(d: dict[str, Any]) -> Any:
    """A :class:`ManifestEntry` from its ``to_dict`` form (bytes/sha256 are added by the manifest writer)."""
    from medvl.export.manifest import ManifestEntry

    return ManifestEntry(**{k: d[k] for k in ("path", "format", "split", "samples", "images", "extra")})
