"""Curation: exact dedup, MD5 exclusion (benchmark leakage guard) and patient-level splits.

:func:`curate_records` runs the three in the order a build needs them, from a recipe's ``curation``
block; the pieces are importable on their own."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from medvl.core.records import ImageRecord, Reject
from medvl.curate.dedup import dedup_records, exclude_by_md5, file_md5, read_exclusions
from medvl.curate.split import SplitReport, assign_sample_splits, assign_splits, assign_splits_with_report

if TYPE_CHECKING:
    from medvl.pipeline.recipe import CurationConfig


def curate_records(records: Iterable[ImageRecord], cfg: "CurationConfig", out_dir: str | Path, seed: int,
                   respect_source_split: bool = True,
                   ) -> tuple[list[ImageRecord], list[Reject], SplitReport]:
    """Dedup (if ``cfg.dedup``), drop images whose MD5 is in ``cfg.exclude_md5`` / ``cfg.exclude_file``,
    then assign patient-level splits. Returns ``(kept records with .split, rejects, split report)``."""
    kept = list(records)
    rejects: list[Reject] = []
    if cfg.dedup:
        kept, rej = dedup_records(kept)
        rejects += rej
    md5s = {m.strip().lower() for m in cfg.exclude_md5}
    if cfg.exclude_file:
        md5s |= read_exclusions(cfg.exclude_file)
    if md5s:
        kept, rej = exclude_by_md5(kept, md5s, out_dir)
        rejects += rej
    kept, report = assign_splits_with_report(kept, cfg.splits, seed, respect_source_split)
    return kept, rejects, report


__all__ = ["SplitReport", "assign_sample_splits", "assign_splits", "assign_splits_with_report", "curate_records",
           "dedup_records", "exclude_by_md5", "file_md5", "read_exclusions"]
