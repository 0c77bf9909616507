"""Patient-level train/val/test splits.

The unit is a *group* of patient keys (``ImageRecord.patient_key``: a salted patient id, or a hash of the source
file/volume when the data has no patient id). Keys are grouped when the build links them: copies of one image
merged by dedup, and near-duplicate images (perceptual hash) of different keys. All records of one group land
in one split, so no patient (and no near-identical image) is seen in training and again in testing. Each
dataset is split on its own (stratified), so every dataset shows up in every split when it has enough patients.

How the splits are made:
1. Official splits (``record.extra["source_split"]`` in train/val/test, with aliases like "validation"), when
   ``respect_source_split`` is true and that split has a non-zero fraction, are collected over *every* dataset
   for each group, and the group goes to the most protected one: a patient in any official test split is
   test everywhere, else val, else train. Records moved away from their own official split are counted and
   warned about (``source_split_overridden``).
2. Free groups are ordered by a seeded stable hash (independent of input order and PYTHONHASHSEED). Per
   dataset, each still-empty split with a non-zero fraction first gets one of the smallest groups (when there
   are fewer groups than empty splits, the largest fractions come first, ties by name: train, test, val); then
   every group goes to the split with the largest record deficit (target records minus records so far).
3. An independent check afterwards counts patient keys found in more than one split (``leaked_patients``;
   the build refuses to write such a corpus) and linked pairs that still straddle splits.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from medvl.core.groups import Groups
from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Reject, Sample

SOURCE_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                        "validation": "val", "dev": "val", "test": "test", "testing": "test"}
PROTECTION = {"test": 0, "val": 1, "train": 2}  # an official split earlier here wins for the whole patient


@dataclass
class SplitReport:
    """What the split did: records and patients per split, and what needs a warning."""

    records: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    source_split_kept: int = 0  # records that kept the split their source gave them
    source_split_ignored: int = 0  # records whose source split is not one of ours (or has fraction 0)
    source_split_overridden: int = 0  # records moved to their patient's more protected official split
    patients_in_several_official_splits: int = 0  # patients whose records the sources put in >1 split
    leaked_patients: int = 0  # patient keys found in more than one split after assignment (must be 0)
    cross_dataset_patients: int = 0  # patient keys shared by several datasets (placed once, kept together)
    linked_groups: int = 0  # groups of several patient keys kept together (merged copies, near-duplicates)
    straddling_links: int = 0  # linked pairs that still ended in different splits (must be 0 when grouped)
    warnings: list[str] = field(default_factory=list)


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {dict(fractions)}")
    total = float(sum(fractions.values()))
    return {str(k): float(v) / total for k, v in fractions.items()}


def assign_splits(records: Iterable[ImageRecord], fractions: Mapping[str, float], seed: int,
                  respect_source_split: bool = True, links: Iterable[tuple[str, str]] = ()) -> list[ImageRecord]:
    """Copies of ``records`` (input order) with ``.split`` set; see the module docstring for the rules."""
    return assign_splits_with_report(records, fractions, seed, respect_source_split, links)[0]


def assign_splits_with_report(records: Iterable[ImageRecord], fractions: Mapping[str, float], seed: int,
                              respect_source_split: bool = True, links: Iterable[tuple[str, str]] = ()
                              ) -> tuple[list[ImageRecord], SplitReport]:
    """Like :func:`assign_splits`, plus a :class:`SplitReport` (counts and warnings). ``links``: pairs of
    patient keys that must share a split (merged duplicates, near-duplicate images)."""
    records = list(records)
    keys = [SplitKey(r.patient_key, r.dataset, r.extra.get("source_split") if r.extra else None) for r in records]
    splits, report = split_keys(keys, fractions, seed, respect_source_split, links)
    return [dataclasses.replace(rec, split=s) for rec, s in zip(records, splits)], report


@dataclass(frozen=True, slots=True)
class SplitKey:
    """What the split needs of a record: its patient key, dataset and official split (raw, as the source gave it)."""

    patient_key: str
    dataset: str
    source_split: object = None


def split_keys(keys: Sequence[SplitKey], fractions: Mapping[str, float], seed: int,
               respect_source_split: bool = True, links: Iterable[tuple[str, str]] = ()
               ) -> tuple[list[str], SplitReport]:
    """The split of every key (records reduced to what the split reads, so a build holds only these in
    memory), with the report; see the module docstring for the rules."""
    fr = _check_fractions(fractions)
    active = [s for s in fr if fr[s] > 0]
    # order used for ties: larger fraction first, then name ("test" before "val")
    rank = {s: i for i, s in enumerate(sorted(active, key=lambda s: (-fr[s], s)))}
    links = sorted({tuple(sorted(pair)) for pair in links if pair[0] != pair[1]})
    report = SplitReport()
    groups = Groups()
    for k in keys:
        groups.find(k.patient_key)
    for a, b in links:
        groups.union(a, b)
    group_of = [groups.find(k.patient_key) for k in keys]
    members_of: dict[str, set[str]] = defaultdict(set)
    for k, g in zip(keys, group_of):
        members_of[g].add(k.patient_key)
    report.linked_groups = sum(1 for m in members_of.values() if len(m) > 1)
    seen_in: dict[str, set[str]] = defaultdict(set)
    for k in keys:
        seen_in[k.patient_key].add(k.dataset)
    report.cross_dataset_patients = sum(1 for ds in seen_in.values() if len(ds) > 1)
    del seen_in

    # 1. official splits over every dataset: the most protected one wins for the whole group
    placed: dict[str, str] = {}
    official: dict[str, Counter] = defaultdict(Counter)
    if respect_source_split:
        for k, g in zip(keys, group_of):
            if k.source_split is None:
                continue
            src = SOURCE_SPLIT_ALIASES.get(str(k.source_split).strip().lower())
            if src in rank:
                official[g][src] += 1
            else:
                report.source_split_ignored += 1
    for g, tally in sorted(official.items()):
        placed[g] = min(tally, key=lambda s: (PROTECTION.get(s, 9), rank[s]))
        if len(tally) > 1:
            report.patients_in_several_official_splits += 1
        report.source_split_kept += tally[placed[g]]
        report.source_split_overridden += sum(n for s, n in tally.items() if s != placed[g])

    # 2. per dataset, balance the free groups
    out_split: list[str | None] = [None] * len(keys)
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_dataset[k.dataset].append(i)
    for ds in sorted(by_dataset):
        members: dict[str, list[int]] = defaultdict(list)
        for i in by_dataset[ds]:
            members[group_of[i]].append(i)
        counts = {s: 0 for s in active}
        free: list[str] = []
        for g in sorted(members):
            if g in placed:
                _place(g, placed[g], members, out_split, counts, placed)
            else:
                free.append(g)
        n_total = len(by_dataset[ds])
        targets = {s: fr[s] * n_total for s in active}
        free.sort(key=lambda g: (stable_int("split", seed, ds, g), g))
        empty = sorted((s for s in active if counts[s] == 0), key=lambda s: rank[s])
        # seed empty splits with one small group each (largest fractions first when groups are few, so two
        # groups give train + test); the smallest fractions get the smallest groups
        seeds = empty[:len(free)]
        pos = {p: n for n, p in enumerate(free)}
        for s in sorted(seeds, key=lambda s: (fr[s], rank[s])):
            g = min(free, key=lambda p: (len(members[p]), pos[p]))
            free.remove(g)
            _place(g, s, members, out_split, counts, placed)
        for g in free:
            best = max(active, key=lambda s: (targets[s] - counts[s], -rank[s]))
            _place(g, best, members, out_split, counts, placed)

    splits = [str(s) for s in out_split]
    _check(keys, splits, links, report)
    for g in members_of:
        report.patients[placed[g]] = report.patients.get(placed[g], 0) + len(members_of[g])
    report.patients = dict(sorted(report.patients.items()))
    report.records = dict(sorted(Counter(splits).items()))
    _warn(report, active)
    return splits, report


def _check(keys: Sequence[SplitKey], splits: Sequence[str], links: list[tuple[str, ...]], report: SplitReport) -> None:
    """Independent of how splits were assigned: patient keys in several splits, linked pairs apart."""
    where: dict[str, set[str | None]] = defaultdict(set)
    for k, s in zip(keys, splits):
        where[k.patient_key].add(s)
    report.leaked_patients = sum(1 for s in where.values() if len(s) > 1)
    report.straddling_links = sum(1 for a, b in links if a in where and b in where and where[a] != where[b])


def _warn(report: SplitReport, active: list[str]) -> None:
    if report.source_split_overridden:
        report.warnings.append(
            f"{report.patients_in_several_official_splits} patient(s) are in more than one official split (within or "
            f"across datasets); {report.source_split_overridden} record(s) moved to the patient's most protected "
            "official split (test, then val, then train) so no patient is in two splits")
    if report.source_split_ignored:
        report.warnings.append(f"{report.source_split_ignored} record(s) have a source split that is not one of "
                               f"{', '.join(active)}; they were split by patient like the rest")
    if report.leaked_patients:
        report.warnings.append(f"{report.leaked_patients} patient(s) ended up in more than one split")


def _place(g: str, split: str, members: dict[str, list[int]], out_split: list[str | None],
           counts: dict[str, int], placed: dict[str, str]) -> None:
    placed[g] = split
    for i in members[g]:
        out_split[i] = split
    counts[split] += len(members[g])


def assign_sample_splits(samples: Iterable[Sample], records: Iterable[ImageRecord], fractions: Mapping[str, float],
                         seed: int) -> tuple[list[Sample], list[Reject]]:
    """Give each sample the split of its record(s); returns ``(kept, dropped)``.

    A sample follows ``record_id`` when set, else the records of its images. Samples whose record was removed
    (dedup, audit) or whose images fall in different splits are dropped with a reason (stage ``"split"``).
    Text-only samples get a split from a seeded stable hash of their id, in proportion to ``fractions``."""
    fr = _check_fractions(fractions)
    records = list(records)
    by_id = {r.id: r.split for r in records}
    by_image: dict[str, set[str | None]] = defaultdict(set)
    for r in records:
        by_image[r.image].add(r.split)
    kept: list[Sample] = []
    dropped: list[Reject] = []

    def drop(s: Sample, why: str) -> None:
        dropped.append(Reject(source=str(s.meta.get("dataset", "")), item=s.id, reason=f"sample {s.id}: {why}",
                              stage="split"))

    for s in samples:
        if s.record_id:
            if s.record_id not in by_id:
                drop(s, f"its record {s.record_id} is no longer in the corpus (removed by curation)")
                continue
            split = by_id[s.record_id]
        elif s.images:
            missing = [p for p in s.images if p not in by_image]
            if missing:
                drop(s, f"image {missing[0]} belongs to no kept record")
                continue
            splits = set().union(*(by_image[p] for p in s.images))
            if len(splits) != 1:
                drop(s, f"its images fall in different splits ({', '.join(sorted(map(str, splits)))})")
                continue
            split = splits.pop()
        else:
            split = _hash_split(s.id, fr, seed)
        kept.append(dataclasses.replace(s, split=split))
    return kept, dropped


def _hash_split(key: str, fr: dict[str, float], seed: int) -> str:
    """A split for ``key`` chosen by a seeded stable hash, with probabilities ``fr``."""
    u = stable_int("text-split", seed, key) / 2.0**64
    acc = 0.0
    active = [s for s in fr if fr[s] > 0]
    for s in active:
        acc += fr[s]
        if u < acc:
            return s
    return active[-1]
