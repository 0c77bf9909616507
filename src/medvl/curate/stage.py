"""The curate stage of a build, over shards: the same steps as :func:`medvl.curate.curate_records`, in
memory bounded by the shard size plus a few keys per record.

1. **partition** (streamed): records go to buckets by image content hash, so identical copies meet in one
   bucket;
2. **buckets** (an executor task each): dedup with annotation merging and the exclusion lists, inside the
   bucket; ids are assigned here, once; kept records are written sorted by id, with a key shard beside them
   (id, patient key, dataset, official split, perceptual hashes); then, when kept records carry captions,
   caption near-duplicates are removed across buckets (:mod:`medvl.curate.caption_stage`: embeddings per
   bucket on the executor, the decision here in record id order, the bucket shards filtered);
3. **global** (main process, keys only): the key shards merged by id give every record an index; near-
   duplicates, links and patient-level splits are decided on those keys;
4. **final pass** (streamed): the bucket shards merged by id, each record given its split, written as one
   id-sorted records file.

A stage never imports the orchestrator: it is handed an executor, a journal and the work folder."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from medvl.core.records import ImageRecord, Reject
from medvl.core.shards import (TAIL_TASKS, Journal, ShardWriter, key_of_line, merge_distinct, merge_keyed,
                               merge_sorted, read_lines, shard_ok, tail_sizes)
from medvl.curate import (CurationReport, exclusion_md5s, near_duplicate_links, report_merges, report_straddling,
                          straddling_indices)
from medvl.curate.caption_stage import caption_of, run_caption_dedup, step_valid
from medvl.curate.dedup import Merge, dedup_records, exclude_by_md5
from medvl.curate.split import SplitKey, split_keys

if TYPE_CHECKING:
    from medvl.curate.config import CurationConfig


@dataclass
class BucketTask:
    name: str  # journal unit, "curate/bucket-00003"
    inputs: str  # records of the bucket (JSON lines), any order
    out: str  # kept records, sorted by id
    keys: str  # one key row per kept record, sorted by id
    rejects: str  # dedup / exclusion rejects
    dedup: bool
    md5s: list[str]
    out_dir: str


@dataclass
class BucketResult:
    name: str
    kept: int
    shas: dict[str, str]  # file -> sha256 of the three shards
    merges: list[dict[str, Any]] = field(default_factory=list)  # Merge fields (for links and the report)
    exhaustive_datasets: list[str] = field(default_factory=list)  # datasets with a record whose labels are exhaustive
    captions: int = 0  # kept records with a caption (extra["caption"]), the input of caption dedup


def run_bucket_task(task: BucketTask) -> BucketResult:
    """Dedup and exclusions inside one bucket; write kept records and keys sorted by id (lines start with the
    JSON-encoded id and a tab, so merging needs no parsing)."""
    records = [ImageRecord.from_dict(json.loads(line)) for line in read_lines(task.inputs)]
    rejects: list[Reject] = []
    merges: list[Merge] = []
    if task.dedup:
        records, rej, merges = dedup_records(records)
        rejects += rej
    if task.md5s:
        records, rej = exclude_by_md5(records, set(task.md5s), task.out_dir)
        rejects += rej
    rows = sorted(((rec.id, rec) for rec in records), key=lambda x: x[0])
    with ShardWriter(task.out) as out, ShardWriter(task.keys) as keys, ShardWriter(task.rejects) as rj:
        for rid, rec in rows:
            head = json.dumps(rid, ensure_ascii=False)
            out.write(head + "\t" + json.dumps(rec.to_dict(), ensure_ascii=False, sort_keys=True))
            key = [rec.patient_key, rec.dataset, rec.extra.get("source_split") if rec.extra else None, rec.phash,
                   rec.dhash, rec.image, rec.labels, sorted({g.label for g in rec.regions})]
            keys.write(head + "\t" + json.dumps(key, ensure_ascii=False))
        for r in rejects:
            rj.write(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True))
    exhaustive = sorted({rec.dataset for _, rec in rows if rec.extra.get("labels_exhaustive")})
    return BucketResult(name=task.name, kept=len(rows), shas={task.out: out.sha256, task.keys: keys.sha256,
                                                             task.rejects: rj.sha256},
                        merges=[asdict(m) for m in merges], exhaustive_datasets=exhaustive,
                        captions=sum(1 for _, rec in rows if caption_of(rec.extra)))


def partition(records: Iterable[tuple[str, str]], work: Path, n_buckets: int) -> list[tuple[str, str]]:
    """Write records (``(sha256 of the image, JSON line)``, ids not yet assigned) into ``n_buckets`` files by
    image hash, so identical copies meet in one bucket; returns [(path, sha256 of the file)] per bucket."""
    folder = work / "curate" / "in"
    writers = [ShardWriter(folder / f"bucket-{b:05d}.jsonl") for b in range(n_buckets)]
    for w in writers:
        w.__enter__()
    try:
        for sha, line in records:
            writers[int(sha[:8], 16) % n_buckets].write(line)
    except BaseException as e:
        for w in writers:
            w.__exit__(type(e), e, None)
        raise
    for w in writers:
        w.__exit__(None, None, None)
    return [(str(w.path), w.sha256) for w in writers]


def run_buckets(buckets: list[str], work: Path, cfg: "CurationConfig", out_dir: Path, executor: Any,
                journal: Journal) -> list[BucketResult]:
    """Run (or, on resume, reuse) every bucket task, then caption dedup over all buckets; results in bucket
    order. A bucket whose shards caption dedup rewrote is reused while that step's journal entry holds."""
    md5s = sorted(exclusion_md5s(cfg))
    cap = step_valid(journal, cfg.caption_dedup) if cfg.caption_dedup.enabled else None
    filtered: dict[str, str] = cap["shas"] if cap else {}
    tasks, results = [], {}
    for b, path in enumerate(buckets):
        name = f"curate/bucket-{b:05d}"
        base = work / "curate" / "out"
        t = BucketTask(name=name, inputs=path, out=str(base / f"records-{b:05d}.jsonl"),
                       keys=str(base / f"keys-{b:05d}.jsonl"), rejects=str(base / f"rejects-{b:05d}.jsonl"),
                       dedup=cfg.dedup, md5s=md5s, out_dir=str(out_dir))
        done = journal.get(name)
        if done and all(shard_ok(p, filtered.get(p, h)) for p, h in done["result"]["shas"].items()):
            results[b] = BucketResult(**done["result"])
        else:
            tasks.append((b, t))
    for (b, _), res in zip(tasks, executor.map(run_bucket_task, [t for _, t in tasks])):
        journal.add(res.name, result=asdict(res))
        results[b] = res
    return run_caption_dedup([results[b] for b in range(len(buckets))], work, cfg.caption_dedup, executor, journal)


def decide(buckets: list[BucketResult], work: Path, cfg: "CurationConfig", seed: int
           ) -> tuple[CurationReport, dict[str, str], dict[str, list[str]], set[str], dict[int, str], set[str]]:
    """Near-duplicates, links and splits from the key shards (merged by id). Returns the report, the split of
    every patient key, label spaces, datasets whose labels stop being exhaustive, the ids the report lists
    (filled in by the final pass) and every label seen."""
    report = CurationReport()
    links: list[tuple[str, str]] = []
    merges = [Merge(**m) for b in buckets for m in b.merges]
    exhaustive = {ds for b in buckets for ds in b.exhaustive_datasets}
    flagged = report_merges(merges, exhaustive, report, links)
    del merges
    from medvl.curate.phash import HashColumns

    keys: list[SplitKey] = []
    hashes = HashColumns()
    interned: dict[str, str] = {}
    spaces: dict[str, set[str]] = {}
    paths = [str(work / "curate" / "out" / f"keys-{b:05d}.jsonl") for b in range(len(buckets))]
    want_hashes = cfg.near_duplicates != "off"
    for line in merge_sorted(paths, key=key_of_line):
        patient, dataset, source_split, ph, dh, _, labels, region_labels = json.loads(line[line.index("\t") + 1:])
        patient = interned.setdefault(patient, patient)
        dataset = interned.setdefault(dataset, dataset)
        keys.append(SplitKey(patient, dataset, source_split))
        if want_hashes:
            hashes.add(ph, dh)
        spaces.setdefault(dataset, set()).update(labels, region_labels)
    near = near_duplicate_links(hashes, [k.patient_key for k in keys], cfg, links, report)
    del hashes
    splits, report.split = split_keys(keys, cfg.splits, seed, True, links)
    patient_split = {k.patient_key: s for k, s in zip(keys, splits)}
    listed = straddling_indices(near, splits)
    report_straddling(near, _Pending(listed), splits, report)  # ids filled in by the final pass
    report.warnings += report.split.warnings
    label_spaces = {k: sorted(v) for k, v in spaces.items()}
    every_label = {lb for v in spaces.values() for lb in v}
    return report, patient_split, label_spaces, flagged, {i: "" for i in listed}, every_label


class _Pending(dict):
    """Placeholder ids for the straddling list: ``{index}``, replaced once the final pass has read the ids."""

    def __init__(self, listed: set[int]) -> None:
        super().__init__({i: f"\x00{i}" for i in listed})


def final_pass(n_buckets: int, work: Path, patient_split: dict[str, str], flagged: set[str], report: CurationReport,
               listed: dict[int, str], chunk_records: int) -> tuple[list[list[int]], dict[str, dict[str, int]], int]:
    """Merge the bucket shards by id into ``work/records.jsonl`` (each record with its split), cut it into
    generation chunks, count, and write the sorted lists of kept images and masks (``work/curate/images.txt``,
    ``masks.txt``). Returns (chunks, counts, records). Raises ValueError on two records with one id."""
    from collections import Counter

    paths = [str(work / "curate" / "out" / f"records-{b:05d}.jsonl") for b in range(n_buckets)]
    counts: dict[str, Counter] = {"by_modality": Counter(), "by_split": Counter(), "by_dataset": Counter()}
    chunks: list[list[int]] = []
    start = pos = n = 0
    # byte offsets after each record not yet in a chunk: the last TAIL_TASKS * chunk_records records are cut into
    # smaller chunks (tail_sizes: quarter-size, then halving), so generation does not end with one worker on a full chunk
    pending: deque[int] = deque()
    lookahead = TAIL_TASKS * chunk_records
    images, masks = SortedSet(work / "curate" / "images"), SortedSet(work / "curate" / "masks")
    with ShardWriter(work / "records.jsonl") as w:
        for rid, body in merge_keyed(paths, lambda rid: ValueError(
                f"two records have the id {rid!r}: they would be mixed up by every export")):
            d = json.loads(body)
            d["split"] = patient_split[d["patient_key"]]
            if d["dataset"] in flagged and d["extra"].get("labels_exhaustive"):
                d["extra"]["labels_exhaustive"] = False
            if n in listed:
                listed[n] = rid
            text = json.dumps(d, ensure_ascii=False, sort_keys=True)
            w.write(text)
            images.add(d["image"])
            for p in d["extra"].get("images") or ():  # the further images of a multi-image record
                images.add(p)
            if d.get("mask"):
                masks.add(d["mask"])
            counts["by_modality"][d["modality"]] += 1
            counts["by_split"][d["split"] or "none"] += 1
            counts["by_dataset"][d["dataset"]] += 1
            n += 1
            pos += len(text.encode("utf-8")) + 1
            pending.append(pos)
            if len(pending) >= lookahead + chunk_records:
                end = [pending.popleft() for _ in range(chunk_records)][-1]
                chunks.append([start, end])
                start = end
    for size in tail_sizes(len(pending), chunk_records):
        end = [pending.popleft() for _ in range(size)][-1]
        chunks.append([start, end])
        start = end
    images.close(work / "curate" / "images.txt")
    masks.close(work / "curate" / "masks.txt")
    for row in report.near_duplicates_straddling:
        for k in (0, 2):
            if row[k].startswith("\x00"):
                row[k] = listed[int(row[k][1:])]
    return chunks, {k: dict(sorted(v.items())) for k, v in counts.items()}, n


def path_order(rel: str) -> tuple[str, ...]:
    """Sort key of a relative path: its components (the order of a name-sorted folder walk)."""
    return tuple(rel.split("/"))


class SortedSet:
    """Distinct strings in bounded memory: sorted runs spilled to ``folder``, merged by :meth:`close` into one
    sorted file of distinct lines (sorted by :func:`path_order`)."""

    def __init__(self, folder: Path, run_size: int = 100_000) -> None:
        self.folder, self.run_size = folder, run_size
        self.buf: set[str] = set()
        self.runs: list[Path] = []

    def add(self, item: str) -> None:
        self.buf.add(item)
        if len(self.buf) >= self.run_size:
            self._spill()

    def _spill(self) -> None:
        if self.buf:
            p = self.folder / f"run-{len(self.runs):05d}.txt"
            with ShardWriter(p) as w:
                for x in sorted(self.buf, key=path_order):
                    w.write(x)
            self.runs.append(p)
            self.buf = set()

    def close(self, target: Path) -> int:
        """Write the distinct sorted lines to ``target``; returns their number."""
        self._spill()
        n = 0
        with ShardWriter(target) as w:
            for x in merge_distinct(self.runs, key=path_order):
                w.write(x)
                n += 1
        for r in self.runs:
            r.unlink()
        return n


def iter_records(path: str, start: int = 0, end: int | None = None) -> Iterator[ImageRecord]:
    """Records of an id-sorted records file (a byte range of it: one generation chunk)."""
    with open(path, "rb") as f:
        f.seek(start)
        while end is None or f.tell() < end:
            line = f.readline()
            if not line:
                break
            yield ImageRecord.from_dict(json.loads(line))

