"""The text step of a build: text-only sources (``mcq_jsonl``, ``pubmedqa``, ``conversations``) to samples.

1. Each text source is enumerated (one unit per data file); each file is parsed in an executor task
   (:func:`medvl.sources.text_base.run_text_task`) into a shard of items and its rejects (journaled units).
2. :func:`medvl.curate.text.curate_text` drops exact and near-duplicates (test, then val, then train) and gives
   every item its split and provenance id.
3. The kept samples are written as sample shards and id-sorted view shards beside the generate stage's
   (``samples/text-NNNNN.jsonl``, ``views/<split>/chunk-text-NNNNN.jsonl``), so every export, the mixture and the
   card read them like image samples. Journaled as ``text/final``; a resumed build reuses it."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from medvl.core.records import Reject
from medvl.core.shards import Journal, ShardWriter, read_lines, shard_ok
from medvl.pipeline.recipe import Recipe
from medvl.pipeline.steps import GenerateFacts, SourceStats, enumerate_source

SHARD_SAMPLES = 20_000


def text_sources(recipe: Recipe) -> list[int]:
    from medvl.sources.text_base import is_text_format

    return [i for i, cfg in enumerate(recipe.sources) if is_text_format(cfg.format)]


def text_step(recipe: Recipe, out_dir: Path, work: Path, executor: Any, journal: Journal, gen: GenerateFacts,
              stats: dict[str, SourceStats]) -> None:
    """Read, curate and write the text-only samples; adds them to ``gen`` (shards and counts)."""
    from medvl.sources.text_base import TextResult, TextTask, run_text_task

    indices = text_sources(recipe)
    if not indices:
        return
    folder = work / "text"
    folder.mkdir(parents=True, exist_ok=True)
    pending: list[TextTask] = []
    shards: list[tuple[str, str]] = []  # (source name, item shard) in source and file order
    results: list[TextResult] = []
    with ShardWriter(folder / "rejects-enumerate.jsonl") as ew:
        for si in indices:
            cfg = recipe.sources[si]
            k = 0
            for obj in enumerate_source(recipe, si, executor):
                stats[cfg.name].units += 1
                if isinstance(obj, Reject):
                    stats[cfg.name].rejected_units += 1
                    ew.write(json.dumps(obj.to_dict(), ensure_ascii=False, sort_keys=True))
                    continue
                name, out = f"text/{si:03d}-{k:05d}", folder / f"items-{si:03d}-{k:05d}.jsonl"
                shards.append((cfg.name, str(out)))
                done = journal.get(name)
                if done and done.get("file") == obj.key and shard_ok(out, done["result"]["sha256"]):
                    results.append(TextResult(**done["result"]))
                else:
                    pending.append(TextTask(name=name, source=cfg.model_dump(mode="json"), unit_key=obj.key,
                                            unit_payload=obj.payload, out=str(out)))
                k += 1
    keys = {t.name: t.unit_key for t in pending}
    for res in executor.map(run_text_task, pending):
        journal.add(res.name, file=keys[res.name], result=asdict(res))
        results.append(res)
    source_of = {f"text/{si:03d}": recipe.sources[si].name for si in indices}
    with ShardWriter(folder / "rejects-read.jsonl") as rw:
        for res in sorted(results, key=lambda r: r.name):
            st = stats[source_of[res.name[:8]]]
            st.kept_units += res.items > 0
            st.rejected_units += res.items == 0
            for r in res.rejects:
                rw.write(json.dumps(r, ensure_ascii=False, sort_keys=True))
    final = journal.get("text/final")
    if not (final and all(shard_ok(p, h) for p, h in final["shas"].items())):
        final = _curate_and_write(recipe, out_dir, work, journal, shards)
    _add_to(gen, final)


def _items(shards: list[tuple[str, str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for source, path in shards:
        for line in read_lines(path):
            yield source, json.loads(line)


def _curate_and_write(recipe: Recipe, out_dir: Path, work: Path, journal: Journal,
                      shards: list[tuple[str, str]]) -> dict[str, Any]:
    from medvl.curate.text import SPLIT_ORDER, curate_text
    from medvl.export.base import SampleError, _view
    from medvl.generate.stage import write_view_shards

    shas: dict[str, str] = {}
    counts: dict[str, Counter] = {k: Counter() for k in ("by_split", "by_lang", "by_source", "by_task", "rejects")}
    buffer: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    sample_shards: list[str] = []
    n_buffered = [0]

    def flush() -> None:
        i = len(sample_shards)
        path = work / "samples" / f"text-{i:05d}.jsonl"
        with ShardWriter(path) as w:
            for split in sorted(buffer):
                for _, v in buffer[split]:
                    w.write(json.dumps(v.sample.to_dict(), ensure_ascii=False, sort_keys=True))
        shas[str(path)] = w.sha256
        sample_shards.append(str(path))
        shas.update(write_view_shards(buffer, work, f"text-{i:05d}"))
        buffer.clear()
        n_buffered[0] = 0

    rej_path = work / "text" / "rejects-curate.jsonl"
    with ShardWriter(rej_path) as rw:
        passes = [_items(shards) for _ in SPLIT_ORDER]
        for obj in curate_text(passes, recipe.curation.text_dedup, recipe.curation.splits, recipe.seed):
            if isinstance(obj, Reject):
                counts["rejects"][obj.stage] += 1
                rw.write(json.dumps(obj.to_dict(), ensure_ascii=False, sort_keys=True))
                continue
            try:
                split, view = _view(obj, {}, {}, {}, out_dir)
            except SampleError as e:
                counts["rejects"]["validate"] += 1
                rw.write(json.dumps(Reject(source=obj.meta["dataset"], item=obj.id, reason=str(e),
                                           stage="validate").to_dict(), ensure_ascii=False, sort_keys=True))
                continue
            buffer[split].append((obj.id, view))
            for key, value in (("by_split", split), ("by_lang", obj.lang), ("by_source", obj.meta["dataset"]),
                               ("by_task", obj.meta["source_task"])):
                counts[key][value] += 1
            n_buffered[0] += 1
            if n_buffered[0] >= SHARD_SAMPLES:
                flush()
        if n_buffered[0]:
            flush()
    shas[str(rej_path)] = rw.sha256
    facts = {k: dict(sorted(v.items())) for k, v in counts.items()}
    facts["samples"] = sum(facts["by_split"].values())
    return journal.add("text/final", shas=shas, shards=sample_shards, facts=facts)


def _add_to(gen: GenerateFacts, final: dict[str, Any]) -> None:
    f = final["facts"]
    gen.shards.extend(final["shards"])
    gen.samples += f["samples"]
    gen.by_kind = dict(sorted({**gen.by_kind, "text": gen.by_kind.get("text", 0) + f["samples"]}.items()))
    langs = Counter(gen.by_lang)
    langs.update(f["by_lang"])
    gen.by_lang = dict(sorted(langs.items()))
    splits = Counter(gen.by_split)
    splits.update(f["by_split"])
    gen.by_split = dict(splits)
    gen.text = {"samples": f["samples"], "by_source": f["by_source"], "by_task": f["by_task"],
                "by_lang": f["by_lang"], "by_split": f["by_split"], "duplicates_dropped": f["rejects"].get("dedup", 0),
                "invalid": f["rejects"].get("validate", 0)}
