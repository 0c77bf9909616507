"""Patient-level train/val/test splits.

The unit is ``ImageRecord.patient_key`` (a salted patient id, or a hash of the source file/volume when
the data has no patient id): all records of one patient land in one split, so no patient is seen in
training and again in testing. Each dataset is split on its own (stratified), so every dataset shows up
in every split when it has enough patients.

How a dataset is split:
1. Patients already placed (by an earlier dataset sharing the key, or by a respected source split) are fixed.
2. Records whose source fixes a split (``record.extra["source_split"]`` in train/val/test, with aliases
   like "validation") keep it when ``respect_source_split`` is true and that split has a non-zero
   fraction; the rest of that patient's records follow. A patient whose records the source put in more
   than one split cannot be fixed by us: it is counted in ``SplitReport.leaked_patients``.
3. Free patients are ordered by a seeded stable hash (independent of input order and PYTHONHASHSEED).
   Each still-empty split with a non-zero fraction first gets one of the smallest patients (when there are
   fewer patients than empty splits, the largest fractions come first, ties by name: train, test, val);
   then every patient goes to the split with the largest record deficit (target records minus records so
   far). Splits end up close to the fractions in records (within about one patient's records).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord, Reject, Sample

SOURCE_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                        "validation": "val", "dev": "val", "test": "test", "testing": "test"}


@dataclass
class SplitReport:
    """What the split did: records and patients per split, and what needs a warning."""

    records: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    source_split_kept: int = 0  # records that kept the split their source gave them
    source_split_ignored: int = 0  # records whose source split is not one of ours (or has fraction 0)
    leaked_patients: int = 0  # patients the source itself put in more than one split
    cross_dataset_patients: int = 0  # patient keys shared by several datasets (placed once, kept together)
    warnings: list[str] = field(default_factory=list)


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {dict(fractions)}")
    total = float(sum(fractions.values()))
    return {str(k): float(v) / total for k, v in fractions.items()}


def _source_split(rec: ImageRecord) -> str | None:
    raw = rec.extra.get("source_split") if rec.extra else None
    return SOURCE_SPLIT_ALIASES.get(str(raw).strip().lower()) if raw is not None else None


def assign_splits(records: Iterable[ImageRecord], fractions: Mapping[str, float], seed: int,
                  respect_source_split: bool = True) -> list[ImageRecord]:
    """Copies of ``records`` (input order) with ``.split`` set; see the module docstring for the rules."""
    return assign_splits_with_report(records, fractions, seed, respect_source_split)[0]


def assign_splits_with_report(records: Iterable[ImageRecord], fractions: Mapping[str, float], seed: int,
                              respect_source_split: bool = True) -> tuple[list[ImageRecord], SplitReport]:
    """Like :func:`assign_splits`, plus a :class:`SplitReport` (counts and warnings)."""
    fr = _check_fractions(fractions)
    active = [s for s in fr if fr[s] > 0]
    # order used for ties: larger fraction first, then name ("test" before "val")
    rank = {s: i for i, s in enumerate(sorted(active, key=lambda s: (-fr[s], s)))}
    records = list(records)
    report = SplitReport()
    out_split: list[str | None] = [None] * len(records)
    placed: dict[str, str] = {}  # patient key -> split, across datasets

    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_dataset[rec.dataset].append(i)
    seen_in: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        seen_in[rec.patient_key].add(rec.dataset)
    report.cross_dataset_patients = sum(1 for ds in seen_in.values() if len(ds) > 1)

    for ds in sorted(by_dataset):
        patients: dict[str, list[int]] = defaultdict(list)
        for i in by_dataset[ds]:
            patients[records[i].patient_key].append(i)
        counts = {s: 0 for s in active}
        free: list[str] = []
        for pk in sorted(patients):
            members = patients[pk]
            own: dict[int, str] = {}
            if respect_source_split:
                for i in members:
                    src = _source_split(records[i])
                    if src in counts:
                        own[i] = src
                    elif records[i].extra and records[i].extra.get("source_split") is not None:
                        report.source_split_ignored += 1
            if own:
                tally = Counter(own.values())
                if len(tally) > 1:
                    report.leaked_patients += 1
                major = sorted(tally, key=lambda s: (-tally[s], rank[s]))[0]
                home = placed.get(pk, major)
                report.source_split_kept += len(own)
            elif pk in placed:
                home = placed[pk]
            else:
                free.append(pk)
                continue
            placed.setdefault(pk, home)
            for i in members:
                out_split[i] = own.get(i, home)
                counts[out_split[i]] = counts.get(out_split[i], 0) + 1

        n_total = len(by_dataset[ds])
        targets = {s: fr[s] * n_total for s in active}
        free.sort(key=lambda pk: (stable_int("split", seed, ds, pk), pk))
        empty = sorted((s for s in active if counts[s] == 0), key=lambda s: rank[s])
        # seed empty splits with one small patient each (largest fractions first when patients are few,
        # so two patients give train + test); the smallest fractions get the smallest patients
        seeds = empty[:len(free)]
        pos = {p: n for n, p in enumerate(free)}
        for s in sorted(seeds, key=lambda s: (fr[s], rank[s])):
            pk = min(free, key=lambda p: (len(patients[p]), pos[p]))
            free.remove(pk)
            _place(pk, s, patients, out_split, counts, placed)
        for pk in free:
            best = max(active, key=lambda s: (targets[s] - counts[s], -rank[s]))
            _place(pk, best, patients, out_split, counts, placed)

    for s in placed.values():
        report.patients[s] = report.patients.get(s, 0) + 1
    out: list[ImageRecord] = []
    for rec, s in zip(records, out_split):
        out.append(dataclasses.replace(rec, split=s))
        report.records[s] = report.records.get(s, 0) + 1  # type: ignore[index]
    report.records = dict(sorted(report.records.items()))
    report.patients = dict(sorted(report.patients.items()))
    if report.leaked_patients:
        report.warnings.append(f"{report.leaked_patients} patient(s) appear in more than one official source split; "
                               "their records keep the source's split (set respect_source_split: false to regroup)")
    if report.source_split_ignored:
        report.warnings.append(f"{report.source_split_ignored} record(s) have a source split that is not one of "
                               f"{', '.join(active)}; they were split by patient like the rest")
    return out, report


def _place(pk: str, split: str, patients: dict[str, list[int]], out_split: list[str | None],
           counts: dict[str, int], placed: dict[str, str]) -> None:
    placed[pk] = split
    for i in patients[pk]:
        out_split[i] = split
    counts[split] += len(patients[pk])


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
