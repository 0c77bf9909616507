"""`medvl build`: the orchestrator. It imports the stages and runs them over shards on disk; no stage
imports it.

1. **read** (:mod:`medvl.sources.read`): sources are enumerated lazily (index phases such as DICOM headers on
   the executor), units batched into tasks, each task -> one record shard;
2. **curate** (:mod:`medvl.curate.stage`): source-wide scrubbing, dedup with annotation merging and exclusions
   per image-hash bucket, near-duplicates and patient-level splits on keys, one id-sorted records file;
3. **generate** (:mod:`medvl.generate.stage`): one task per chunk of records -> sample and view shards;
4. **export** (:mod:`medvl.export.stage`): ``records.jsonl``, ``samples.jsonl``, ``rejects.jsonl``,
   ``summary.json``; the exports side by side on the executor, each streamed from the shards; the card; then
   ``manifest.json``.

Finished units go to a journal in ``<out>/.medvl-work/``; ``resume=True`` after a crash or ``kill -9``
redoes only what the journal does not vouch for and gives byte-identical outputs. The executor (local
process pool or Ray) decides where tasks run, never what they output. Memory is set by the shard sizes and
a few keys per record, not by the corpus."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from medvl.core.records import ImageRecord, Reject, Sample
from medvl.core.shards import Journal, ShardWriter, external_sort, read_lines, shard_ok
from medvl.pipeline.checks import PathScrubber, lonely_labels
from medvl.pipeline.recipe import Recipe
from medvl.pipeline.steps import (CurateFacts, GenerateFacts, ReadOutcome, RunOptions, SourceStats, curate_step,
                                  generate_step, read_step, source_scrubbers)
from medvl.pipeline.text_step import text_step
from medvl.pipeline.workdir import OWNED, WORK, WorkdirError, plan_of, prepare, remove_unused  # noqa: F401
from medvl.sources.read import get_source

__all__ = ["BuildError", "BuildResult", "RunOptions", "SourceStats", "run_build", "load_all", "generate"]


class BuildError(RuntimeError):
    pass


@dataclass
class BuildResult:
    """A finished build. ``records``, ``samples`` and ``rejects`` are read from the output files when first
    used (a large build never holds them in memory unless asked)."""

    out_dir: Path
    stats: dict[str, SourceStats] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model_run: dict[str, int] = field(default_factory=dict)  # this run's model requests, cache hits, retries

    @property
    def records(self) -> list[ImageRecord]:
        return [ImageRecord.from_dict(json.loads(x)) for x in read_lines(self.out_dir / "records.jsonl")]

    @property
    def samples(self) -> list[Sample]:
        return [Sample.from_dict(json.loads(x)) for x in read_lines(self.out_dir / "samples.jsonl")]

    @property
    def rejects(self) -> list[Reject]:
        return [Reject(**json.loads(x)) for x in read_lines(self.out_dir / "rejects.jsonl")]


def run_build(recipe: Recipe, out_dir: Path, workers: int | None = None, overwrite: bool = False,
              progress: Callable[[int, int], None] | None = None, *, run: RunOptions | None = None) -> BuildResult:
    """Build ``recipe`` into ``out_dir`` with ``workers`` processes (default: the recipe's). See the module
    docstring; ``run`` chooses the executor, resumption and shard sizes."""
    from medvl.executor import ExecutorError, make_executor

    run = run or RunOptions()
    out_dir = Path(out_dir).resolve()
    if not recipe.salt:
        raise BuildError("the recipe has no `salt`: set a secret string (e.g. `salt: <random text>`); patient keys "
                         "are HMACs of patient ids under it, and without a secret they could be reversed")
    for k in ("shard_units", "bucket_records", "chunk_records"):
        if getattr(run, k) < 1:
            raise BuildError(f"{k} must be >= 1, got {getattr(run, k)}")
    plan = plan_of(recipe, run.shard_units, run.chunk_records, run.bucket_records)
    try:
        work = prepare(out_dir, plan, overwrite, run.resume)
    except WorkdirError as e:
        raise BuildError(str(e)) from None
    if not run.dry_run:  # a dry run's listing describes the build before it, not this one
        shutil.rmtree(out_dir / "dry-run", ignore_errors=True)
    journal = Journal(work / "journal.jsonl")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        with make_executor(run.executor, workers or recipe.workers, ray_address=run.ray_address,
                           max_in_flight=run.max_in_flight) as ex:
            read = read_step(recipe, out_dir, work, ex, journal, run, progress)
            timings["read"] = time.perf_counter() - t0
            t = time.perf_counter()
            try:
                facts = curate_step(recipe, read, out_dir, work, ex, journal, run)
            except ValueError as e:  # two records with one id
                raise BuildError(str(e)) from None
            except RuntimeError as e:
                if isinstance(e, ExecutorError):
                    raise
                raise BuildError(str(e)) from None
            timings["curate"] = time.perf_counter() - t
            t = time.perf_counter()
            gen = generate_step(recipe, facts, out_dir, work, ex, journal, dry_run=run.dry_run)
            timings["generate"] = time.perf_counter() - t
            if run.dry_run:
                return BuildResult(out_dir=out_dir, stats=read.stats, timings=timings,
                                   summary=write_dry_run(recipe, out_dir, work, gen))
            model_run = _model_run(recipe, gen)
            text_step(recipe, out_dir, work, ex, journal, gen, read.stats)
            t = time.perf_counter()
            summary = finish(recipe, out_dir, work, journal, read, facts, gen, ex)
            timings["export"] = time.perf_counter() - t
    finally:
        journal.close()
    shutil.rmtree(work, ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    return BuildResult(out_dir=out_dir, stats=read.stats, summary=summary, timings=timings, model_run=model_run)


def _model_run(recipe: Recipe, gen: GenerateFacts) -> dict[str, int]:
    """What this run (not the build) asked the model: requests sent, re-asks, retries, cache hits."""
    if recipe.generation.llm is None or not gen.ledger_dir:
        return {}
    from dataclasses import asdict as _asdict

    from medvl.llm.ledger import read_ledger

    return _asdict(read_ledger(gen.ledger_dir))


def finish(recipe: Recipe, out_dir: Path, work: Path, journal: Journal, read: ReadOutcome, facts: CurateFacts,
           gen: GenerateFacts, executor: Any) -> dict[str, Any]:
    """Write the tables and the summary, every export (each a journal unit, so a resumed build redoes only
    the exports that did not finish) and the manifest."""
    from medvl.export.corpus import ShardCorpus
    from medvl.export.manifest import ManifestEntry, write_manifest

    done = journal.get("finish/tables")
    tables = [done] if done and all(shard_ok(out_dir / p, h) for p, h in done["shas"].items()) else []

    def write_tables() -> None:  # run while the workers write the exports, which need only the views and images
        if not tables:
            tables.append(_write_tables(recipe, out_dir, work, journal, read, facts, gen))

    corpus = ShardCorpus(out_dir / "records.jsonl", [Path(p) for p in gen.shards], work / "views",
                         out_dir / "rejects.jsonl", gen.skipped, work / "curate" / "images.txt")
    entries = _run_exports(recipe, corpus, out_dir, journal, executor, gen.by_split, meanwhile=write_tables)
    write_tables()  # done already, unless no export ran
    summary = tables[0]["summary"]
    n_images = corpus.n_images()
    n_masks = sum(1 for _ in read_lines(work / "curate" / "masks.txt"))
    base = [
        ManifestEntry(path="records.jsonl", format="medvl-records", split=None, samples=facts.records, images=n_images),
        ManifestEntry(path="samples.jsonl", format="medvl-samples", split=None, samples=gen.samples, images=n_images),
        ManifestEntry(path="rejects.jsonl", format="medvl-rejects", split=None, samples=summary["rejects"], images=0),
        ManifestEntry(path="summary.json", format="medvl-summary", split=None, samples=0, images=0),
        ManifestEntry(path="recipe.yaml", format="medvl-recipe", split=None, samples=0, images=0),
        ManifestEntry(path="images/", format="png", split=None, samples=0, images=n_images),
    ]
    if n_masks:
        base.append(ManifestEntry(path="masks/", format="png-label-map", split=None, samples=0, images=n_masks))
    known = dict(tables[0]["shas"])  # checksums computed where the files were written, not read again
    for name in dict.fromkeys(recipe.exports):
        known.update(journal.get(f"export/{name}")["shas"])
    write_manifest(out_dir, base + entries, {"recipe": recipe.name, "seed": recipe.seed}, known_sha256=known)
    return summary


def _write_tables(recipe: Recipe, out_dir: Path, work: Path, journal: Journal, read: ReadOutcome,
                  facts: CurateFacts, gen: GenerateFacts) -> dict[str, Any]:
    """``rejects.jsonl``, ``records.jsonl``, ``samples.jsonl``, ``recipe.yaml`` and ``summary.json``; unused
    images removed. Journaled with the summary and the files' checksums."""
    from medvl.core.hashing import file_digest

    paths = PathScrubber(recipe, out_dir)
    remove_unused(out_dir, {"images": work / "curate" / "images.txt", "masks": work / "curate" / "masks.txt"})
    rejects_by_stage, rejects_by_source, n_rejects, by_source_stage = _write_rejects(recipe, out_dir, work, read,
                                                                                     paths)
    _move(work / "records.jsonl", out_dir / "records.jsonl")
    _concat(gen.shards, out_dir / "samples.jsonl")
    (out_dir / "recipe.yaml").write_text(recipe_yaml(recipe), encoding="utf-8")
    report = facts.report
    lonely = lonely_labels(recipe, {k: set(v) for k, v in facts.owners.items()},
                           [tuple(p) for p in report["merged_source_pairs"]])
    summary = summarize(recipe, read.stats, facts, gen, rejects_by_stage, rejects_by_source, n_rejects,
                        by_source_stage)
    summary["splits"] = report["split"]
    summary["curation"] = {k: v for k, v in report.items() if k not in ("split", "warnings")}
    summary["labels_in_one_source"] = lonely
    summary["warnings"] = [paths(w) for w in build_warnings(recipe, facts, read.stats) + report["warnings"]
                           + lonely_warnings(lonely)]
    # written before the card (whose counting task is handed out after this): it reports curation notes and warnings
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    names = ("records.jsonl", "samples.jsonl", "rejects.jsonl", "recipe.yaml", "summary.json")
    return journal.add("finish/tables", summary=summary, shas={n: file_digest(out_dir / n) for n in names})


def _run_exports(recipe: Recipe, corpus: Any, out_dir: Path, journal: Journal, executor: Any,
                 split_sizes: dict[str, int] | None = None, meanwhile: Callable[[], None] | None = None) -> list[Any]:
    """The recipe's exports, side by side on the executor (export.stage), then the card, which describes the
    others; entries in recipe order. An export the journal has, with every file it wrote unchanged, is not
    run again. ``meanwhile`` runs in this process once the exports are handed to the workers, before the card's
    counting task, which reads what it writes (the build's tables)."""
    from medvl.export import EXPORTS
    from medvl.export.corpus import DuplicateSampleId
    from medvl.export.stage import (CARD_TALLY, COST_ORDER, PER_SPLIT, ExportTask, entry_from_dict, run_export_task,
                                    written_shas)

    options = dict(getattr(recipe, "export_options", None) or {})
    names = list(dict.fromkeys(recipe.exports))
    found: dict[str, list[Any]] = {}
    for name in names:
        done = journal.get(f"export/{name}")
        if done and all(shard_ok(out_dir / p, h) for p, h in done["shas"].items()):
            found[name] = [entry_from_dict(e) for e in done["entries"]]
    todo = [n for n in names if n not in found and n != "card"]
    for name in todo:
        EXPORTS.get(name)  # an unknown name fails here, before any task runs
    if "card" in names and "card" not in found:
        from medvl.export.base import check_options
        from medvl.export.card import DEFAULTS as CARD_DEFAULTS

        try:  # here, not in the counting task's worker
            check_options("card", options.get("card"), CARD_DEFAULTS)
        except ValueError as e:
            raise BuildError(str(e)) from None
        todo.append(CARD_TALLY)  # the card's counting pass (and its plots) runs beside the exports
    todo.sort(key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))  # stable: recipe order
    splits = corpus.splits()
    # samples per split as generation counted them (only orders the tasks; counting the view shards here would read
    # every shard in this process)
    sizes = {s: (split_sizes or {}).get(s, 0) for s in splits}
    largest = max(splits, key=lambda s: sizes[s]) if splits else None
    # the largest split of each image-embedding export first, then the other exports, then the other splits
    # from the largest down: the long tasks start first and the short ones fill in beside them
    first, rest = [], []
    for n in todo:
        if n in PER_SPLIT and len(splits) > 1:
            first.append((n, largest))
            rest += [(n, s) for s in splits if s != largest]
        else:
            first.append((n, None))
    rest.sort(key=lambda t: -sizes[t[1]])  # stable: export order among equal sizes
    tasks = [ExportTask(name=n, corpus=corpus, out_dir=str(out_dir), recipe=recipe,
                        options=dict(options.get("card" if n == CARD_TALLY else n) or {}), split=s)
             for n, s in first + rest]

    def handed_out() -> Iterator[Any]:
        yield from (t for t in tasks if t.name != CARD_TALLY)
        if meanwhile is not None:
            meanwhile()  # this process's share, while the workers run the tasks above
        yield from (t for t in tasks if t.name == CARD_TALLY)  # it reads what meanwhile() wrote

    parts: dict[str, dict[str, Any]] = {}  # per-split results of a PER_SPLIT export until it has every split
    tallied, drawn = None, None
    # every task submitted at once (a few dozen at most, small results): the long first tasks do not hold back the
    # ones queued behind the short ones, and meanwhile() runs while they are out
    for res in executor.map(run_export_task, handed_out(), window=max(1, len(tasks))):
        if res.error:
            raise BuildError(res.error)
        if res.name == CARD_TALLY:
            tallied, drawn = res.tally, res.plots
            continue
        if res.split is not None:
            parts.setdefault(res.name, {})[res.split] = res
            if len(parts[res.name]) < len(splits):
                continue
            by_split = parts.pop(res.name)
            done_parts = [by_split[s] for s in splits]  # entries in split order, as one task writes them
            res_entries = [e for r in done_parts for e in r.entries]
            res_shas = {k: v for r in done_parts for k, v in r.shas.items()}
        else:
            res_entries, res_shas = res.entries, res.shas
        journal.add(f"export/{res.name}", entries=res_entries, shas=res_shas)
        found[res.name] = [entry_from_dict(e) for e in res_entries]
    entries = [e for n in names if n != "card" for e in found[n]]
    if "card" in names:
        if "card" not in found:
            try:
                new = EXPORTS.get("card")(corpus, out_dir, recipe, options=dict(options.get("card") or {}),
                                          entries=list(entries), tallied=tallied, drawn=drawn)
            except DuplicateSampleId as e:
                raise BuildError(str(e)) from None
            journal.add("export/card", entries=[e.to_dict() for e in new], shas=written_shas(new, out_dir))
            found["card"] = new
        entries += found["card"]
    return entries


def _move(src: Path, dst: Path) -> None:
    if src.is_file():
        src.replace(dst)


def _concat(parts: list[str], target: Path) -> None:
    with ShardWriter(target) as w:
        for p in parts:
            for line in read_lines(p):
                w.write(line)


def _reject_key(line: str) -> tuple[str, str, str, str]:
    d = json.loads(line)
    return (d["source"], d["item"], d["stage"], d["reason"])


def _write_rejects(recipe: Recipe, out_dir: Path, work: Path, read: ReadOutcome, paths: PathScrubber
                   ) -> tuple[dict[str, int], dict[str, int], int, dict[tuple[str, str], int]]:
    """Every reject (enumeration, read, dedup, exclusions), scrubbed source-wide and of local paths, sorted
    in bounded memory into ``rejects.jsonl``. Returns counts by stage, by source (dedup and audit only) and
    the total."""
    scrubbers = source_scrubbers(recipe)
    runs = [*read.enum_rejects, str(work / "curate" / "rejects-read.jsonl"),
            *sorted(str(p) for p in (work / "curate" / "out").glob("rejects-*.jsonl")),
            *sorted(str(p) for p in (work / "generate").glob("rejects-*.jsonl")),
            *sorted(str(p) for p in (work / "text").glob("rejects-*.jsonl"))]

    def lines() -> Iterator[str]:
        for i, p in enumerate(runs):
            enum_run = i < len(read.enum_rejects)  # the read stage's own rejects were scrubbed in curate
            for line in read_lines(p):
                r = Reject(**json.loads(line))
                sc = scrubbers.get(r.source) if enum_run else None
                if sc is not None:
                    r = Reject(source=r.source, item=sc(r.item), reason=sc(r.reason), stage=r.stage)
                yield json.dumps(paths.reject(r).to_dict(), ensure_ascii=False, sort_keys=True)

    by_stage: Counter = Counter()
    by_source: Counter = Counter()
    by_source_stage: Counter = Counter()
    n = 0
    (work / "sort").mkdir(exist_ok=True)
    with ShardWriter(out_dir / "rejects.jsonl") as w:
        for line in external_sort(lines(), _reject_key, work / "sort"):
            d = json.loads(line)
            by_stage[d["stage"]] += 1
            by_source_stage[(d["source"], d["stage"])] += 1
            if d["stage"] in ("dedup", "caption_dedup", "audit"):
                by_source[d["source"]] += 1
            n += 1
            w.write(line)
    for name, sc in scrubbers.items():  # enumeration rejects scrubbed here; records and read rejects in curate
        read.stats[name].redacted_strings += sc.count
    return dict(sorted(by_stage.items())), dict(by_source), n, dict(by_source_stage)


def summarize(recipe: Recipe, stats: dict[str, SourceStats], facts: CurateFacts, gen: GenerateFacts,
              rejects_by_stage: dict[str, int], curated_out: dict[str, int], n_rejects: int,
              by_source_stage: dict[tuple[str, str], int] | None = None) -> dict[str, Any]:
    kept_by_source = facts.counts["by_dataset"]
    sources = {}
    for k, v in stats.items():  # read counts, then what curation kept
        sources[k] = {**v.to_dict(), "dropped_by_curation": curated_out.get(k, 0),
                      "records_after_curation": kept_by_source.get(k, 0)}
    return {
        "recipe": recipe.name,
        "seed": recipe.seed,
        "sources": sources,
        "units": {"input": sum(s.units for s in stats.values()), "kept": sum(s.kept_units for s in stats.values()),
                  "rejected": sum(s.rejected_units for s in stats.values())},
        "records": facts.records,
        "samples": gen.samples,
        "rejects": n_rejects,
        "rejects_by_stage": rejects_by_stage,
        "records_by_modality": facts.counts["by_modality"],
        "records_by_split": facts.counts["by_split"],
        "samples_by_kind": gen.by_kind,
        "samples_by_lang": gen.by_lang,
        **({"model_generation": model_summary(recipe, gen)} if recipe.generation.llm is not None else {}),
        **({"text_only": gen.text} if gen.text else {}),
        **({"video": video} if (video := video_counts(recipe, stats, facts)) else {}),
        **({"figure_pipeline": funnel} if (funnel := figure_funnel(recipe, stats, facts, gen,
                                                                     by_source_stage or {})) else {}),
    }


def video_counts(recipe: Recipe, stats: dict[str, SourceStats], facts: CurateFacts) -> dict[str, Any]:
    """Records sampled from video clips, and the clips they came from, per video source."""
    by_source = {cfg.name: {"clips_read": stats[cfg.name].kept_units,
                            "frames_kept": facts.counts["by_dataset"].get(cfg.name, 0)}
                 for cfg in recipe.sources if cfg.format == "video" and cfg.name in stats}
    if not by_source:
        return {}
    return {"clips_read": sum(v["clips_read"] for v in by_source.values()),
            "frames_kept": sum(v["frames_kept"] for v in by_source.values()), "by_source": by_source}


def figure_funnel(recipe: Recipe, stats: dict[str, SourceStats], facts: CurateFacts, gen: GenerateFacts,
                  by_source_stage: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """PubMedVision's funnel per figure_caption source: how many figures are left after each step."""
    from medvl.generate.figures import FIGURE_FORMAT

    out = {}
    for cfg in recipe.sources:
        if cfg.format != FIGURE_FORMAT:
            continue
        st = stats.get(cfg.name, SourceStats())
        rej = {stage: v for (src, stage), v in by_source_stage.items() if src == cfg.name}
        read_in = st.units
        valid = read_in - rej.get("validate", 0)
        text = valid - rej.get("text_filter", 0)
        by_src = (gen.llm.get("counts_by_source") or {}).get(cfg.name, {})
        out[cfg.name] = {"figures": read_in, "well_formed": valid, "after_text_filter": text,
                         "after_image_filter": st.records,
                         "after_dedup_and_curation": facts.counts["by_dataset"].get(cfg.name, 0),
                         "rewritten_by_model": by_src.get("figures_rewritten", 0),
                         "rewrite_rejected": rej.get("rewrite", 0)}
    return out


def model_summary(recipe: Recipe, gen: GenerateFacts) -> dict[str, Any]:
    """The model behind the samples: what it wrote and the tokens and cost of the replies behind them (counted
    from the replies, cached or not, so a resumed build reports what a fresh one would)."""
    from medvl.llm.ledger import Usage

    m = recipe.generation.llm
    usage = dict(gen.llm.get("usage", {}))
    tokens = Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
    return {"model": m.model, "endpoint": m.client_config().endpoint, **gen.llm.get("counts", {}),
            "exchanges": usage.get("exchanges", 0), "prompt_tokens": tokens.prompt_tokens,
            "completion_tokens": tokens.completion_tokens, "cost": round(tokens.cost(m.prices), 6)}


def write_dry_run(recipe: Recipe, out_dir: Path, work: Path, gen: GenerateFacts) -> dict[str, Any]:
    """``dry-run/requests.jsonl`` (every request the build would send, images as hashes) and
    ``dry-run/summary.json`` (counts, estimated tokens and cost); read and curate stay journaled in the work
    folder, so the real build resumes from them."""
    from medvl.llm.ledger import read_ledger

    folder = out_dir / "dry-run"
    folder.mkdir(exist_ok=True)
    n = 0
    with ShardWriter(folder / "requests.jsonl") as w:
        for p in sorted((work / "dry-run").glob("requests-*.jsonl")):
            for line in read_lines(p):
                w.write(line)
                n += 1
    usage = read_ledger(gen.ledger_dir) if gen.ledger_dir else None
    summary: dict[str, Any] = {"dry_run": True, "requests": n}
    if recipe.generation.llm is not None and usage is not None:
        m = recipe.generation.llm
        summary.update({"model": m.model, "endpoint": m.client_config().endpoint, "cached": usage.cached,
                        "estimated_prompt_tokens": usage.estimated_prompt_tokens,
                        "estimated_completion_tokens": usage.estimated_completion_tokens,
                        "estimated_cost": round(usage.estimated_cost(m.prices), 6),
                        "note": "re-asks and the translations of model-written samples are not counted; the "
                                "completion estimate is max_tokens per request (an upper bound)"})
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(work / "dry-run", ignore_errors=True)
    return summary


def build_warnings(recipe: Recipe, facts: CurateFacts, stats: dict[str, SourceStats] | None = None) -> list[str]:
    """Things the user should fix in the recipe, shown in the summary and the CLI."""
    warnings: list[str] = []
    for name, st in sorted((stats or {}).items()):
        if st.units == 0:
            warnings.append(f"source {name!r} found nothing to read under its path")
    for cfg in recipe.sources:
        warnings.extend(f"source {cfg.name!r}: {note}" for note in get_source(cfg).notes)
    from medvl.generate import count_label_warnings, source_rules

    warnings.extend(count_label_warnings(source_rules(recipe.sources), facts.label_spaces))
    if "zh" in recipe.generation.languages and recipe.generation.zh_share > 0:
        from medvl.generate import missing_zh_labels

        missing = missing_zh_labels(facts.every_label, recipe.generation.label_zh)
        if missing:
            shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
            warnings.append(f"{len(missing)} label(s) have no Chinese name and stay English in Chinese samples: "
                            f"{shown}; add them to generation.label_zh")
    return warnings


def lonely_warnings(lonely: list[dict[str, Any]]) -> list[str]:
    """A warning per label that only one source of a cohort uses and that resembles another source's label
    (likely two spellings of one finding); one line for the rest (all are listed in summary.json)."""
    out = []
    for item in lonely:
        if item["similar"]:
            out.append(f"label {item['label']!r} is used only by source {item['only_in']!r} of the cohort "
                       f"{', '.join(item['cohort'])} (similar: {', '.join(item['similar'])}); if both name one "
                       "finding, map one to the other with label_synonyms")
    rest = len(lonely) - len(out)
    if rest:
        out.append(f"{rest} other label(s) are used by only one source of their cohort (summary.json "
                   "labels_in_one_source)")
    return out


def recipe_yaml(recipe: Recipe) -> str:
    """The resolved recipe as run: salt withheld (it is a secret); ``workers`` left out (it changes speed,
    never outputs, so builds with different pools stay byte-identical); local paths written relative to the
    recipe's root (see ``Recipe.portable_path``) and scrubbed of identifying values the sources saw."""
    import yaml

    data = recipe.model_dump(mode="json")
    data["salt"] = "<withheld>"
    data.pop("workers", None)
    scrubbers = source_scrubbers(recipe)
    for src, cfg in zip(data["sources"], recipe.sources):
        path = recipe.portable_path(cfg.path) or ""
        for sc in scrubbers.values():
            path = sc(path)
        src["path"] = path
    if data.get("root") is not None:
        data["root"] = "."
    if data["curation"].get("exclude_file"):
        data["curation"]["exclude_file"] = recipe.portable_path(data["curation"]["exclude_file"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# in-memory helpers (benchmarks, tests, small tools) -----------------------------------------------------
def load_all(recipe: Recipe, out_dir: Path, workers: int = 1, progress: Callable[[int, int], None] | None = None
             ) -> tuple[list[ImageRecord], list[Reject], dict[str, SourceStats]]:
    """The read stage alone, into ``out_dir`` (images written there), with records and rejects returned in
    memory: what the read benchmark measures."""
    from medvl.executor import make_executor

    out_dir = Path(out_dir).resolve()
    work = out_dir / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    journal = Journal(work / "journal.jsonl")
    try:
        with make_executor("local", workers) as ex:
            read = read_step(recipe, out_dir, work, ex, journal, RunOptions(), progress)
    finally:
        journal.close()
    records: list[ImageRecord] = []
    rejects: list[Reject] = []
    for p in read.enum_rejects:
        rejects += [Reject(**json.loads(x)) for x in read_lines(p)]
    for p in read.shards:
        for line in read_lines(p):
            d = json.loads(line)
            if "rec" in d:
                records.append(ImageRecord.from_dict(d["rec"]))
            else:
                rejects.append(Reject(**d["rej"]))
    shutil.rmtree(work, ignore_errors=True)
    return records, rejects, read.stats


def generate(recipe: Recipe, records: Iterable[ImageRecord]) -> list[Sample]:
    """Samples for records held in memory (the build runs :mod:`medvl.generate.stage` over shards)."""
    from medvl.generate import make_generator, source_rules

    records = list(records)
    spaces: dict[str, set[str]] = {}
    for r in records:
        spaces.setdefault(r.dataset, set()).update(r.labels, (x.label for x in r.regions))
    gen = make_generator(recipe.generation, recipe.seed, {k: sorted(v) for k, v in spaces.items()},
                         source_rules(recipe.sources))
    samples: list[Sample] = []
    for r in records:
        for s in gen.generate(r):
            s.split = r.split
            samples.append(s)
    return samples
