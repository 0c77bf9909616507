"""How the orchestrator drives each stage over shards: which tasks exist, which the journal already has,
what runs on the executor. Each step returns small facts (counts, file lists); the data stays on disk.

read -> ``work/read/<source>-<batch>.jsonl`` (records and rejects of a batch of units)
curate -> ``work/records.jsonl`` (id-sorted, with splits) and ``work/curate/`` (rejects, kept image lists)
generate -> ``work/samples/``, ``work/views/<split>/`` (see :mod:`medvl.generate.stage`)"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from medvl.core.records import ImageRecord, Reject
from medvl.core.shards import TAIL_TASKS, Journal, ShardWriter, read_lines, shard_ok, tail_sizes  # noqa: F401
from medvl.pipeline.recipe import Recipe
from medvl.sources.base import Unit
from medvl.sources.read import ReadResult, ReadTask, get_source, run_read_task


@dataclass
class SourceStats:
    units: int = 0  # work units enumerated (+ items rejected while enumerating)
    kept_units: int = 0  # units that gave at least one record
    rejected_units: int = 0  # units that gave none (each has at least one reject)
    records: int = 0
    partial_rejects: int = 0  # slices/boxes/frames dropped inside kept units
    redacted_strings: int = 0  # strings (paths, labels, metadata, reject reasons) whose identifying values were replaced

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, d: dict[str, int]) -> None:
        """Add a read task's counts (its ``units`` were already counted while enumerating)."""
        for k, v in d.items():
            if k != "units":
                setattr(self, k, getattr(self, k) + v)


@dataclass
class RunOptions:
    """How a build runs (never what it outputs): executor, resumption and shard sizes."""

    executor: str = "local"  # "local" or "ray"
    ray_address: str | None = None
    resume: bool = False
    shard_units: int = 64  # source units per read task (one record shard)
    bucket_records: int = 20_000  # records per curate bucket (the unit of in-memory dedup)
    chunk_records: int = 500  # records per generation task (small enough to keep every worker busy)
    max_in_flight: int | None = None  # tasks submitted and not yet collected (default: 2 x workers + 2)
    dry_run: bool = False  # read and curate, then list the model requests generation would send; no outputs


# ---------------------------------------------------------------------------------------------------- read
def _index_units(cfg: Any, src: Any, executor: Any) -> Iterator[Unit | Reject]:
    """A source's units; a source with an index phase (e.g. DICOM headers) reads it on the executor."""
    tasks = src.index_tasks() if hasattr(src, "index_tasks") else None
    if tasks is None:
        return src.units()
    from medvl.sources.base import run_index_task

    job = cfg.model_dump(mode="json")
    return src.units_from_index(executor.map(run_index_task, ((job, t) for t in tasks)))


def enumerate_source(recipe: Recipe, si: int, executor: Any) -> Iterator[Unit | Reject]:
    """The units of source ``si`` (at most ``max_items``), or a reject when the source cannot be enumerated."""
    cfg = recipe.sources[si]
    root = Path(cfg.path)
    if not root.exists():
        yield Reject(source=cfg.name, item=".", reason=f"{root}: source folder/file does not exist", stage="read")
        return
    src = get_source(cfg)
    src.notes = []  # sources are cached per config: notes describe this enumeration only
    n = 0
    try:
        for obj in _index_units(cfg, src, executor):
            if isinstance(obj, Unit):
                if cfg.max_items is not None and n >= cfg.max_items:
                    continue
                n += 1
            yield obj
    except Exception as e:  # unreadable index file etc.: the source is rejected, the build goes on
        yield Reject(source=cfg.name, item=".", reason=f"{root}: cannot enumerate source ({type(e).__name__}: {e})",
                     stage="read")


def _units_digest(units: list[Unit]) -> str:
    h = hashlib.sha256()
    for u in units:
        h.update(json.dumps([u.key, u.payload], sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


@dataclass
class ReadOutcome:
    stats: dict[str, SourceStats]
    shards: list[str] = field(default_factory=list)  # record shards in source and batch order
    enum_rejects: list[str] = field(default_factory=list)  # per source: rejects met while enumerating


def read_step(recipe: Recipe, out_dir: Path, work: Path, executor: Any, journal: Journal, run: RunOptions,
              progress: Callable[[int, int], None] | None = None) -> ReadOutcome:
    """Enumerate every source lazily, batch units into read tasks, run the unfinished ones (a finished task
    is trusted when the journal has it, its units are the same and its shard has the recorded checksum)."""
    outcome = ReadOutcome(stats={cfg.name: SourceStats() for cfg in recipe.sources})
    image = recipe.image.model_dump(mode="json")
    done_units = [0]
    enum_total = [0]

    def tasks() -> Iterator[ReadTask]:
        from medvl.sources.text_base import is_text_format

        for si, cfg in enumerate(recipe.sources):
            if is_text_format(cfg.format):  # text-only sources: read by the text step
                continue
            st = outcome.stats[cfg.name]
            src_dump = cfg.model_dump(mode="json")
            enum_path = work / "read" / f"{si:03d}-enumerate.jsonl"
            outcome.enum_rejects.append(str(enum_path))
            pending: deque[Unit] = deque()  # units enumerated and not yet in a task
            lookahead = TAIL_TASKS * run.shard_units
            k = 0
            with ShardWriter(enum_path) as ew:
                for obj in enumerate_source(recipe, si, executor):
                    st.units += 1
                    enum_total[0] += 1
                    if isinstance(obj, Reject):
                        st.rejected_units += 1
                        ew.write(json.dumps(obj.to_dict(), ensure_ascii=False, sort_keys=True))
                        continue
                    pending.append(obj)
                    if len(pending) >= lookahead + run.shard_units:
                        yield from _task_or_done(si, k, [pending.popleft() for _ in range(run.shard_units)], src_dump)
                        k += 1
                for size in tail_sizes(len(pending), run.shard_units):
                    yield from _task_or_done(si, k, [pending.popleft() for _ in range(size)], src_dump)
                    k += 1

    def _task_or_done(si: int, k: int, units: list[Unit], src_dump: dict[str, Any]) -> Iterator[ReadTask]:
        name = f"read/{si:03d}-{k:06d}"
        shard = work / "read" / f"{si:03d}-{k:06d}.jsonl"
        outcome.shards.append(str(shard))
        digest = _units_digest(units)
        done = journal.get(name)
        if done and done.get("units") == digest and shard_ok(shard, done["sha256"]):
            outcome.stats[src_dump["name"]].add(done["stats"])
            done_units[0] += len(units)
            return
        _digests[name] = digest
        yield ReadTask(name=name, shard=str(shard), source=src_dump, units=units, out_dir=str(out_dir), image=image,
                       salt=recipe.salt or "", verify=run.resume)

    _digests: dict[str, str] = {}
    for res in executor.map(run_read_task, tasks()):
        assert isinstance(res, ReadResult)
        journal.add(res.name, sha256=res.sha256, stats=res.stats, units=_digests.pop(res.name))
        outcome.stats[_source_of(recipe, res.name)].add(res.stats)
        done_units[0] += res.stats["units"]
        if progress:
            progress(done_units[0], enum_total[0])
    # units rejected while enumerating count as units (above); a task's stats count its own units
    return outcome


def _source_of(recipe: Recipe, task_name: str) -> str:
    return recipe.sources[int(task_name.split("/")[1].split("-")[0])].name


# -------------------------------------------------------------------------------------------------- curate
def source_scrubbers(recipe: Recipe) -> dict[str, Any]:
    """One scrubber per source holding every identifying value the source saw while enumerating."""
    from medvl.core.privacy import Scrubber

    out = {}
    for cfg in recipe.sources:
        src = get_source(cfg)
        if src.sensitive:
            out[cfg.name] = Scrubber(src.sensitive, key=recipe.salt or "", protected=src.protected_terms())
    return out


def scrub_record(rec: ImageRecord, sc: Any) -> ImageRecord:
    """Files and folders may be named after a patient whose values only another file of the source carries
    (a blank header beside a filled one, a truncated file). Each item was scrubbed of its own values in its
    worker; here it is also scrubbed of all identifying values its source saw while enumerating."""
    rec.source_file = sc(rec.source_file)
    rec.labels = sorted(set(sc(rec.labels)))
    for reg in rec.regions:
        reg.label = sc(reg.label)
    rec.regions = list(rec.regions)  # re-assigned: region labels are part of the id
    rec.mask_values = sc(rec.mask_values)
    rec.view = sc(rec.view) if rec.view else rec.view
    rec.extra = sc(rec.extra)
    return rec


def scrub_reject(r: Reject, sc: Any) -> Reject:
    return Reject(source=r.source, item=sc(r.item), reason=sc(r.reason), stage=r.stage)


@dataclass
class CurateFacts:
    """What curation decided, kept in the journal so a resumed build need not redo it."""

    chunks: list[list[int]]
    counts: dict[str, dict[str, int]]
    records: int
    report: dict[str, Any]
    label_spaces: dict[str, list[str]]
    owners: dict[str, list[str]]  # dataset -> labels its own records carried before merging
    every_label: list[str]
    records_path: str = ""  # the id-sorted records file (in the work folder until the build moves it out)


LATER_MODULES = ("medvl.generate.stage", "medvl.generate.template", "medvl.export.stage", "medvl.export.webdataset",
                 "medvl.export.parquet", "pyarrow.parquet")
"""What the workers import once the curation buckets are done, while this process decides the splits (they would
idle): the generate and export stages' modules (~0.14 s a worker)."""


def curate_step(recipe: Recipe, read: ReadOutcome, out_dir: Path, work: Path, executor: Any, journal: Journal,
                run: RunOptions) -> CurateFacts:
    """Scrub source-wide and partition (streamed), dedup and exclude per bucket (executor), decide splits on
    keys, write the id-sorted records file."""
    from medvl.curate import stage

    done = journal.get("curate/final")
    if done:
        for path in (work / "records.jsonl", out_dir / "records.jsonl"):  # moved out once the tables are written
            if shard_ok(path, done["sha256"]):
                for name, n in done["redacted"].items():
                    read.stats[name].redacted_strings += n
                return CurateFacts(**{**done["facts"], "records_path": str(path)})
    scrubbers = source_scrubbers(recipe)
    owners: dict[str, set[str]] = defaultdict(set)
    part = journal.get("curate/partition")
    n_records = sum(st.records for st in read.stats.values())
    n_buckets = max(1, math.ceil(n_records / run.bucket_records))
    if not (part and all(shard_ok(p, h) for p, h in part["shards"])):
        rejects_w = ShardWriter(work / "curate" / "rejects-read.jsonl")
        rejects_w.__enter__()

        def records() -> Iterator[tuple[str, str]]:
            for path in read.shards:
                for line in read_lines(path):
                    d = json.loads(line)
                    if "rej" in d:
                        r = Reject(**d["rej"])
                        sc = scrubbers.get(r.source)
                        rejects_w.write(json.dumps((scrub_reject(r, sc) if sc else r).to_dict(), ensure_ascii=False,
                                                   sort_keys=True))
                        continue
                    rec = ImageRecord.from_dict(d["rec"])
                    sc = scrubbers.get(rec.dataset)
                    if sc is not None:
                        rec = scrub_record(rec, sc)
                    owners[rec.dataset].update(rec.labels)
                    owners[rec.dataset].update(g.label for g in rec.regions)
                    yield rec.sha256, json.dumps(rec.to_dict(with_id=False), ensure_ascii=False, sort_keys=True)

        try:
            shards = stage.partition(records(), work, n_buckets)
        except BaseException as e:
            rejects_w.__exit__(type(e), e, None)
            raise
        rejects_w.__exit__(None, None, None)
        shards.append((str(rejects_w.path), rejects_w.sha256))
        part = journal.add("curate/partition", shards=shards, owners={k: sorted(v) for k, v in owners.items()},
                           redacted={k: sc.count for k, sc in scrubbers.items()})
    for name, n in part["redacted"].items():
        read.stats[name].redacted_strings += n
    buckets = [p for p, _ in part["shards"][:-1]]
    results = stage.run_buckets(buckets, work, recipe.curation, out_dir, executor, journal)
    if (warm := getattr(executor, "warm", None)) is not None:
        warm(LATER_MODULES)  # the workers import the later stages' modules while this process decides
    report, patient_split, label_spaces, flagged, listed, every_label = stage.decide(results, work, recipe.curation,
                                                                                     recipe.seed)
    if report.split.leaked_patients:
        raise RuntimeError(f"{report.split.leaked_patients} patient(s) ended up in more than one split; this is a bug "
                           "in the split assignment, please report it with the recipe")
    chunks, counts, n = stage.final_pass(len(buckets), work, patient_split, flagged, report, listed, run.chunk_records)
    facts = CurateFacts(chunks=chunks, counts=counts, records=n, report=asdict(report), label_spaces=label_spaces,
                        owners=part["owners"], every_label=sorted(every_label))
    from medvl.core.hashing import file_digest

    journal.add("curate/final", sha256=file_digest(work / "records.jsonl"), facts=asdict(facts),
                redacted=part["redacted"])
    facts.records_path = str(work / "records.jsonl")
    return facts


# ------------------------------------------------------------------------------------------------ generate
@dataclass
class GenerateFacts:
    samples: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_lang: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)  # sample shards in chunk order
    llm: dict[str, Any] = field(default_factory=dict)  # usage and counts of the model behind the samples
    text: dict[str, Any] = field(default_factory=dict)  # text-only samples: counts by source, task, split
    ledger_dir: str | None = None  # this run's model usage, shared by its processes


def generate_step(recipe: Recipe, facts: CurateFacts, out_dir: Path, work: Path, executor: Any, journal: Journal,
                  dry_run: bool = False) -> GenerateFacts:
    """One generation task per chunk of the records file; finished chunks are reused. A dry run redoes every
    chunk without sending model requests and journals nothing."""
    import uuid
    from collections import Counter

    from medvl.generate.stage import GenerateResult, GenerateTask, run_generate_task

    out = GenerateFacts(ledger_dir=str(work / "generate" / "ledger" / uuid.uuid4().hex[:12]))
    kinds: Counter = Counter()
    langs: Counter = Counter()
    splits: Counter = Counter()
    gen_dump = recipe.generation.model_dump(mode="json")
    sources = [c.model_dump(mode="json") for c in recipe.sources]
    pending: list[GenerateTask] = []
    results: dict[int, GenerateResult] = {}
    for c, (start, end) in enumerate(facts.chunks):
        name = f"generate/chunk-{c:05d}"
        out.shards.append(str(work / "samples" / f"chunk-{c:05d}.jsonl"))
        done = None if dry_run else journal.get(name)
        if done and all(shard_ok(p, h) for p, h in done["result"]["shas"].items()):
            results[c] = GenerateResult(**done["result"])
            continue
        pending.append(GenerateTask(name=name, chunk=c, records=facts.records_path, start=start, end=end,
                                    work=str(work), out_dir=str(out_dir), generation=gen_dump, sources=sources,
                                    seed=recipe.seed, label_spaces=facts.label_spaces, dry_run=dry_run,
                                    ledger_dir=out.ledger_dir))
    for task, res in zip(pending, executor.map(run_generate_task, pending)):
        if not dry_run:
            journal.add(res.name, result=asdict(res))
        results[task.chunk] = res
    llm_usage: Counter = Counter()
    llm_counts: Counter = Counter()
    by_source: dict[str, Counter] = {}
    for c in sorted(results):
        r = results[c]
        out.samples += r.samples
        kinds.update(r.by_kind)
        langs.update(r.by_lang)
        splits.update(r.by_split)
        out.skipped += r.skipped
        llm_usage.update(r.llm.get("usage", {}))
        llm_counts.update(r.llm.get("counts", {}))
        for src, c in (r.llm.get("counts_by_source") or {}).items():
            by_source.setdefault(src, Counter()).update(c)
    if llm_usage or llm_counts:
        out.llm = {"usage": dict(sorted(llm_usage.items())), "counts": dict(sorted(llm_counts.items())),
                   "counts_by_source": {k: dict(sorted(v.items())) for k, v in sorted(by_source.items())}}
    out.by_kind, out.by_lang, out.by_split = dict(sorted(kinds.items())), dict(sorted(langs.items())), dict(splits)
    return out
