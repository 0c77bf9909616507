"""The generate stage of a build, over shards: one executor task per chunk of the id-sorted records file.

A task runs the recipe's generator over its chunk (:meth:`Generator.generate_batch`, so a model-backed
generator can batch and parallelize its requests, with its on-disk cache under the build's work folder)
and writes three kinds of shards:
- ``samples/chunk-NNNNN.jsonl``: the samples in generation order (``samples.jsonl`` is their concatenation);
- ``views/<split>/chunk-NNNNN.jsonl``: each sample as exports see it (:class:`medvl.export.base.View`),
  sorted by sample id, one line ``<JSON id>\\t<JSON view>``, so a k-way merge gives a split in id order;
- ``views/<split>/images-NNNNN.txt``: the split's distinct image paths, sorted (for exact image counts).
The journal marks finished chunks, so a resumed build redoes only the unfinished ones."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvl.core.shards import ShardWriter
from medvl.curate.stage import iter_records


@dataclass
class GenerateTask:
    name: str  # journal unit, "generate/chunk-00012"
    chunk: int
    records: str  # the id-sorted records file
    start: int  # byte range of this chunk
    end: int
    work: str  # the build's work folder
    out_dir: str
    generation: dict[str, Any]  # GenerationConfig.model_dump()
    sources: list[dict[str, Any]]  # SourceConfig.model_dump() of every recipe source
    seed: int
    label_spaces: dict[str, list[str]]
    dry_run: bool = False  # model requests are listed in work/dry-run/, not sent; nothing is journaled
    ledger_dir: str | None = None  # where the run's processes share their model usage (budget, summary)


@dataclass
class GenerateResult:
    name: str
    shas: dict[str, str]  # shard path -> sha256
    samples: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_lang: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # samples no export can use, with the reason
    llm: dict[str, Any] = field(default_factory=dict)  # the model's usage and counts behind this chunk


def view_line(v: Any) -> str:
    """One view shard line: the JSON-encoded sample id, a tab, the view as JSON."""
    body = {"sample": v.sample.to_dict(), "turns": v.turns, "sizes": v.sizes, "meta": v.meta}
    return json.dumps(v.sample.id, ensure_ascii=False) + "\t" + json.dumps(body, ensure_ascii=False)


def run_generate_task(task: GenerateTask) -> GenerateResult:
    """Generate the chunk's samples and write its sample, view and image-list shards."""
    from medvl.export.base import SampleError, _view
    from medvl.generate import make_generator, source_rules
    from medvl.generate.config import GenerationConfig
    from medvl.sources.config import SourceConfig

    gen = make_generator(GenerationConfig.model_validate(task.generation), task.seed, task.label_spaces,
                         source_rules([SourceConfig.model_validate(d) for d in task.sources]))
    gen.start_run(out_dir=task.out_dir, dry_run=task.dry_run, ledger_dir=task.ledger_dir)
    gen.open_cache(str(Path(task.work) / "generate" / "cache"))
    records = list(iter_records(task.records, task.start, task.end))
    work, out_dir = Path(task.work), Path(task.out_dir)
    res = GenerateResult(name=task.name, shas={})
    if task.dry_run:
        work = work / "dry-run"  # the dry run's shards never mix with a real build's
    rec_by_id = {r.id: r for r in records}
    rec_by_image: dict[str, Any] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for r in records:
        rec_by_image.setdefault(r.image, r)
        sizes.setdefault(r.image, (int(r.width), int(r.height)))
    views: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    kinds, langs = Counter(), Counter()
    sample_path = work / "samples" / f"chunk-{task.chunk:05d}.jsonl"
    batches = gen.generate_batch(records)
    _write_report(gen.run_report(), task, work, res)
    with ShardWriter(sample_path) as w:
        for r, samples in zip(records, batches):
            for s in samples:
                s.split = r.split
                w.write(json.dumps(s.to_dict(), ensure_ascii=False, sort_keys=True))
                res.samples += 1
                kinds[s.kind] += 1
                langs[s.lang] += 1
                try:
                    split, view = _view(s, rec_by_id, rec_by_image, sizes, out_dir)
                except SampleError as e:
                    res.skipped.append(str(e))
                    continue
                views[split].append((s.id, view))
    res.shas[str(sample_path)] = w.sha256
    res.shas.update(write_view_shards(views, work, f"{task.chunk:05d}"))
    res.by_split = {split: len(rows) for split, rows in views.items()}
    res.by_kind, res.by_lang = dict(sorted(kinds.items())), dict(sorted(langs.items()))
    return res


def _write_report(report: dict[str, Any], task: GenerateTask, work: Path, res: GenerateResult) -> None:
    """A model-backed generator's rejects (a shard beside the samples) and, in a dry run, its requests."""
    if not report:
        return
    res.llm = {"usage": report.get("usage", {}), "counts": report.get("counts", {}),
               "counts_by_source": report.get("counts_by_source", {})}
    path = work / "generate" / f"rejects-{task.chunk:05d}.jsonl"
    with ShardWriter(path) as w:
        for r in report.get("rejects", []):
            w.write(json.dumps(r, ensure_ascii=False, sort_keys=True))
    res.shas[str(path)] = w.sha256
    if task.dry_run:
        with ShardWriter(work / f"requests-{task.chunk:05d}.jsonl") as w:
            for r in report.get("dry_run_requests", []):
                w.write(json.dumps(r, ensure_ascii=False, sort_keys=True))


def write_view_shards(views: dict[str, list[tuple[str, Any]]], work: Path, stem: str) -> dict[str, str]:
    """Per split: its views sorted by sample id into ``views/<split>/chunk-<stem>.jsonl`` and its distinct image
    paths, sorted, into ``views/<split>/images-<stem>.txt``. Returns shard path -> sha256."""
    shas: dict[str, str] = {}
    for split, rows in views.items():
        rows.sort(key=lambda x: x[0])
        with ShardWriter(work / "views" / split / f"chunk-{stem}.jsonl") as vw:
            for _, v in rows:
                vw.write(view_line(v))
        shas[str(vw.path)] = vw.sha256
        with ShardWriter(work / "views" / split / f"images-{stem}.txt") as iw:
            for p in sorted({p for _, v in rows for p in v.images}):
                iw.write(p)
        shas[str(iw.path)] = iw.sha256
    return shas
