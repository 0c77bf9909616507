"""Curation: exact dedup with annotation merging, MD5 exclusion (benchmark leakage guard), near-duplicate
grouping and patient-level splits.

:func:`curate_records` runs them in the order a build needs them, from a recipe's ``curation`` block; the
pieces are importable on their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from medvl.core.groups import Groups
from medvl.core.records import ImageRecord, Reject
from medvl.curate.dedup import Merge, dedup_records, exclude_by_md5, file_md5, read_exclusions
from medvl.curate.split import (SplitKey, SplitReport, assign_sample_splits, assign_splits, assign_splits_with_report,
                                split_keys)

if TYPE_CHECKING:
    from medvl.curate.config import CurationConfig
    from medvl.curate.phash import HashColumns

MAX_LISTED = 100  # straddling near-duplicate pairs listed by id in the report (all are counted)


@dataclass
class CurationReport:
    """What curation did besides splitting (the split's own report is ``split``)."""

    merged_duplicates: int = 0  # identical copies folded into a kept record
    merges_adding_annotations: int = 0  # of those, copies that added labels, boxes or a view
    merged_across_sources: int = 0
    merged_source_pairs: list[list[str]] = field(default_factory=list)  # [kept source, dropped source], unique
    non_exhaustive_datasets: list[str] = field(default_factory=list)  # classes shown to co-occur on one image
    near_duplicate_pairs: int = 0  # near-identical images of different patient keys
    near_duplicate_links: int = 0  # of those, pairs kept together in one split
    near_duplicate_unlinked: int = 0  # pairs not linked (mode "report", or the group would grow too large)
    near_duplicates_straddling: list[list[str]] = field(default_factory=list)  # [id, split, id, split]
    near_duplicates_straddling_count: int = 0
    split: SplitReport = field(default_factory=SplitReport)
    warnings: list[str] = field(default_factory=list)


def curate_records(records: Iterable[ImageRecord], cfg: "CurationConfig", out_dir: str | Path, seed: int,
                   respect_source_split: bool = True,
                   ) -> tuple[list[ImageRecord], list[Reject], CurationReport]:
    """Dedup (if ``cfg.dedup``; copies' annotations merged), drop images on the exclusion lists
    (``cfg.exclude_md5`` / ``cfg.exclude_file``), find near-duplicates, then assign patient-level splits with
    merged copies and near-duplicates linked. Returns ``(kept records sorted by id, with .split; rejects;
    report)``. A build runs the same steps over shards (:mod:`medvl.curate.stage`)."""
    kept = list(records)
    rejects: list[Reject] = []
    report = CurationReport()
    links: list[tuple[str, str]] = []
    merges: list[Merge] = []
    if cfg.dedup:
        kept, rej, merges = dedup_records(kept)
        rejects += rej
    md5s = exclusion_md5s(cfg)
    if md5s:
        kept, rej = exclude_by_md5(kept, md5s, out_dir)
        rejects += rej
    kept.sort(key=lambda r: r.id)
    flagged = report_merges(merges, {r.dataset for r in kept if r.extra.get("labels_exhaustive")}, report, links)
    for r in kept:
        if r.dataset in flagged:
            r.extra["labels_exhaustive"] = False
    near = near_duplicate_links([(r.phash, r.dhash) for r in kept], [r.patient_key for r in kept], cfg, links, report)
    keys = [SplitKey(r.patient_key, r.dataset, r.extra.get("source_split") if r.extra else None) for r in kept]
    splits, report.split = split_keys(keys, cfg.splits, seed, respect_source_split, links)
    for r, s in zip(kept, splits):
        r.split = s
    report_straddling(near, [r.id for r in kept], splits, report)
    report.warnings += report.split.warnings
    return kept, rejects, report


def exclusion_md5s(cfg: "CurationConfig") -> set[str]:
    """The recipe's exclusion list: ``exclude_md5`` plus the MD5s of ``exclude_file``."""
    md5s = {m.strip().lower() for m in cfg.exclude_md5}
    if cfg.exclude_file:
        md5s |= read_exclusions(cfg.exclude_file)
    return md5s


def report_merges(merges: list[Merge], exhaustive_datasets: set[str], report: CurationReport,
                  links: list[tuple[str, str]]) -> set[str]:
    """Count merges and link the patient keys of each copy with its kept record's; returns the datasets
    whose single-label classes were found together on one image (the same image in two class folders): their
    labels are no longer exhaustive, so no "absent" answers are generated for them (the caller sets
    ``labels_exhaustive`` false on their records). ``exhaustive_datasets``: datasets with any record whose
    labels are exhaustive."""
    links += [(m.kept_patient, m.dropped_patient) for m in merges]
    report.merged_duplicates = len(merges)
    report.merges_adding_annotations = sum(1 for m in merges if m.added_labels or m.added_regions or m.added_view)
    report.merged_across_sources = sum(1 for m in merges if not m.same_dataset)
    report.merged_source_pairs = [list(p) for p in sorted({(m.kept_dataset, m.dropped_dataset) for m in merges
                                                           if not m.same_dataset})]
    cooccur = sorted({m.kept_dataset for m in merges if m.same_dataset and m.labels_differ})
    flagged = [ds for ds in cooccur if ds in exhaustive_datasets]
    report.non_exhaustive_datasets = flagged
    for ds in flagged:
        report.warnings.append(f"dataset {ds!r}: the same image carries several of its classes (e.g. one image in two "
                               "class folders), so its classes co-occur: its labels are no longer treated as "
                               "exhaustive and no 'absent' answers are generated for it")
    if report.merged_duplicates:
        report.warnings.append(f"{report.merged_duplicates} identical image copies were merged into one record each "
                               f"({report.merges_adding_annotations} added labels, boxes or a view; "
                               f"{report.merged_across_sources} across sources)")
    return set(flagged)


def near_duplicate_links(hashes: Sequence[tuple[str | None, str | None]] | HashColumns, patients: list[str], cfg: "CurationConfig",
                         links: list[tuple[str, str]], report: CurationReport) -> list[tuple[int, int]]:
    """Near-identical images of different patient keys (records given in id order, as their hashes and
    patient keys); in mode "group" they are linked (so they share a split) unless the linked group would
    exceed ``near_duplicate_max_group`` records. Returns the unlinked pairs (indices)."""
    if cfg.near_duplicates == "off":
        return []
    from medvl.curate.phash import near_duplicate_pairs

    pairs = [(i, j) for i, j in near_duplicate_pairs(hashes) if patients[i] != patients[j]]
    report.near_duplicate_pairs = len(pairs)
    if cfg.near_duplicates == "report":
        report.near_duplicate_unlinked = len(pairs)
        return pairs
    groups = Groups()
    for p in patients:
        groups.add(p, 1)  # weights: records, so a group's size is its record count
    for a, b in links:  # merged copies are one group whatever its size
        groups.union(a, b)
    unlinked = []
    for i, j in pairs:  # sorted by index = by id
        a, b = patients[i], patients[j]
        if groups.find(a) != groups.find(b):
            if groups.size(a) + groups.size(b) > cfg.near_duplicate_max_group:
                unlinked.append((i, j))
                continue
            groups.union(a, b)
            links.append((a, b))
        report.near_duplicate_links += 1
    report.near_duplicate_unlinked = len(unlinked)
    return unlinked


def report_straddling(pairs: list[tuple[int, int]], ids: Sequence[str] | dict[int, str], splits: Sequence[str],
                      report: CurationReport) -> None:
    """List the unlinked near-duplicate pairs that ended in different splits (``ids``: every record's id, or
    at least those of the first :data:`MAX_LISTED` such pairs)."""
    apart = [(i, j) for i, j in pairs if splits[i] != splits[j]]
    report.near_duplicates_straddling_count = len(apart)
    report.near_duplicates_straddling = [[ids[i], splits[i], ids[j], splits[j]] for i, j in apart[:MAX_LISTED]]
    if apart:
        report.warnings.append(f"{len(apart)} near-duplicate image pair(s) of different patients lie in different "
                               "splits (not grouped: curation.near_duplicates is 'report' or the group would exceed "
                               "curation.near_duplicate_max_group); listed in summary.json curation")


def straddling_indices(pairs: list[tuple[int, int]], splits: Sequence[str]) -> set[int]:
    """The record indices whose ids :func:`report_straddling` will list."""
    apart = [(i, j) for i, j in pairs if splits[i] != splits[j]][:MAX_LISTED]
    return {k for p in apart for k in p}


__all__ = ["CurationReport", "SplitReport", "assign_sample_splits", "assign_splits", "assign_splits_with_report",
           "curate_records", "dedup_records", "exclude_by_md5", "file_md5", "read_exclusions"]
