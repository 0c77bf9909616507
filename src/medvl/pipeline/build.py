"""`medvl build`: sources -> records -> samples -> curated samples -> exports, in one deterministic run.

The stages talk only through records, samples and rejects:
1. enumerate each source's work units (main process) and load them (in-process or a process pool; results
   are consumed in unit order, so the pool changes speed, never output);
2. curate records: audit exclusions, exact-duplicate removal, patient-level splits;
3. generate samples per record (template engine, or any registered generator);
4. write records.jsonl, samples.jsonl, rejects.jsonl, the exports, summary.json and manifest.json."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from medvl.core.records import ImageRecord, Reject, Sample
from medvl.pipeline.checks import PathScrubber, duplicate_ids, label_owners, lonely_labels
from medvl.pipeline.process import Job, UnitResult, get_source, run_job
from medvl.pipeline.recipe import Recipe
from medvl.sources.base import Unit

OWNED = ("images", "masks", "llava", "messages", "parquet", "mixture", "card", "records.jsonl", "samples.jsonl",
         "rejects.jsonl", "summary.json", "manifest.json", "mixture.json", "dataset_card.md", "dataset_card.html",
         "dataset_info.json", "recipe.yaml")


class BuildError(RuntimeError):
    pass


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


@dataclass
class BuildResult:
    out_dir: Path
    records: list[ImageRecord]
    samples: list[Sample]
    rejects: list[Reject]
    stats: dict[str, SourceStats] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    present = [n for n in OWNED if (out_dir / n).exists()]
    if present and not overwrite:
        raise BuildError(f"{out_dir}: already holds a build ({', '.join(present[:4])}...); pass --overwrite to replace it")
    for n in present:
        p = out_dir / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def enumerate_units(recipe: Recipe) -> Iterator[tuple[int, Unit | Reject]]:
    for si, cfg in enumerate(recipe.sources):
        root = Path(cfg.path)
        if not root.exists():
            yield si, Reject(source=cfg.name, item=".", reason=f"{root}: source folder/file does not exist", stage="read")
            continue
        src = get_source(cfg)
        src.notes = []  # sources are cached per config: notes describe this enumeration only
        n = 0
        try:
            for obj in src.units():
                if isinstance(obj, Unit):
                    if cfg.max_items is not None and n >= cfg.max_items:
                        continue
                    n += 1
                yield si, obj
        except Exception as e:  # unreadable index file etc.: the source is rejected, the build goes on
            yield si, Reject(source=cfg.name, item=".", reason=f"{root}: cannot enumerate source "
                             f"({type(e).__name__}: {e})", stage="read")


def load_all(recipe: Recipe, out_dir: Path, workers: int, progress: Callable[[int, int], None] | None = None
             ) -> tuple[list[ImageRecord], list[Reject], dict[str, SourceStats]]:
    stats = {cfg.name: SourceStats() for cfg in recipe.sources}
    rejects: list[Reject] = []
    jobs: list[Job] = []
    for si, obj in enumerate_units(recipe):
        cfg = recipe.sources[si]
        stats[cfg.name].units += 1
        if isinstance(obj, Reject):
            stats[cfg.name].rejected_units += 1
            rejects.append(obj)
        else:
            jobs.append(Job(source=cfg.model_dump(mode="json"), unit=obj, out_dir=str(out_dir),
                            image=recipe.image.model_dump(mode="json"), salt=recipe.salt or ""))
    results: Iterable[UnitResult]
    if workers > 1 and len(jobs) > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(run_job, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8) or 1)))
    else:
        pool = None
        results = map(run_job, jobs)
    records: list[ImageRecord] = []
    try:
        for i, (job, res) in enumerate(zip(jobs, results), start=1):
            st = stats[job.source["name"]]
            if res.records:
                st.kept_units += 1
                st.partial_rejects += len(res.rejects)
            else:
                st.rejected_units += 1
                if not res.rejects:  # nothing lost silently
                    res.rejects.append(Reject(source=job.source["name"], item=res.key,
                                              reason=f"{res.key}: produced no image", stage="read"))
            st.records += len(res.records)
            st.redacted_strings += res.redacted
            records.extend(res.records)
            rejects.extend(res.rejects)
            if progress:
                progress(i, len(jobs))
    finally:
        if pool is not None:
            pool.shutdown()
    records, rejects = scrub_source_wide(recipe, records, rejects, stats)
    return records, rejects, stats


def source_scrubbers(recipe: Recipe) -> dict[str, Any]:
    """One scrubber per source holding every identifying value the source saw while enumerating."""
    from medvl.core.privacy import Scrubber

    out = {}
    for cfg in recipe.sources:
        src = get_source(cfg)
        if src.sensitive:
            out[cfg.name] = Scrubber(src.sensitive, key=recipe.salt or "", protected=src.protected_terms())
    return out


def scrub_source_wide(recipe: Recipe, records: list[ImageRecord], rejects: list[Reject],
                      stats: dict[str, SourceStats] | None = None) -> tuple[list[ImageRecord], list[Reject]]:
    """Files and folders may be named after a patient whose values only another file of the source carries
    (a blank header beside a filled one, a truncated file). Each item was scrubbed of its own values in its
    worker; here every record and reject is also scrubbed of all identifying values its source saw while
    enumerating (counted per source in ``redacted_strings``)."""
    scrubbers = source_scrubbers(recipe)
    if not scrubbers:
        return records, rejects
    out_rej = []
    for r in rejects:
        sc = scrubbers.get(r.source)
        out_rej.append(r if sc is None else Reject(source=r.source, item=sc(r.item), reason=sc(r.reason),
                                                   stage=r.stage))
    for rec in records:
        sc = scrubbers.get(rec.dataset)
        if sc is None:
            continue
        rec.source_file = sc(rec.source_file)
        rec.labels = sorted(set(sc(rec.labels)))
        for reg in rec.regions:
            reg.label = sc(reg.label)
        rec.mask_values = sc(rec.mask_values)
        rec.view = sc(rec.view) if rec.view else rec.view
        rec.extra = sc(rec.extra)
    if stats is not None:
        for name, sc in scrubbers.items():
            stats[name].redacted_strings += sc.count
    return records, out_rej


def curate(recipe: Recipe, records: list[ImageRecord], out_dir: Path) -> tuple[list[ImageRecord], list[Reject], Any]:
    """Exclusions, dedup with merging, near-duplicates and patient-level splits (see ``medvl.curate``);
    records come back sorted by id. A patient in two splits or two records with one id stop the build."""
    from medvl.curate import curate_records
    from medvl.pipeline.checks import duplicate_ids

    records, rejects, report = curate_records(records, recipe.curation, out_dir, recipe.seed)
    records.sort(key=lambda r: r.id)
    problems = duplicate_ids(records, [])
    if problems:
        raise BuildError("records with the same id would be mixed up by every export: " + "; ".join(problems[:5])
                         + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    if report.split.leaked_patients:
        raise BuildError(f"{report.split.leaked_patients} patient(s) ended up in more than one split; this is a bug "
                         "in the split assignment, please report it with the recipe")
    return records, rejects, report


def label_spaces(records: Iterable[ImageRecord]) -> dict[str, list[str]]:
    """Per dataset, the sorted labels its records carry (image labels and region labels)."""
    spaces: dict[str, set[str]] = defaultdict(set)
    for r in records:
        spaces[r.dataset].update(r.labels)
        spaces[r.dataset].update(x.label for x in r.regions)
    return {k: sorted(v) for k, v in spaces.items()}


def generate(recipe: Recipe, records: list[ImageRecord]) -> list[Sample]:
    """Samples for every record. The generator gets each dataset's label space and, per source, what its
    text may count (``medvl.generate.source_rules``: ``count_labels``, ``options.per_component``)."""
    from medvl.generate import make_generator, source_rules

    gen = make_generator(recipe.generation, recipe.seed, label_spaces(records), source_rules(recipe.sources))
    samples: list[Sample] = []
    for r in records:
        for s in gen.generate(r):
            s.split = r.split
            samples.append(s)
    return samples


def remove_orphans(out_dir: Path, records: list[ImageRecord]) -> int:
    """Delete written images/masks that no kept record references (excluded or rejected after writing)."""
    keep = {r.image for r in records} | {r.mask for r in records if r.mask}
    removed = 0
    for folder in ("images", "masks"):
        base = out_dir / folder
        if not base.exists():
            continue
        for p in sorted(base.rglob("*.png")):
            if p.relative_to(out_dir).as_posix() not in keep:
                p.unlink()
                removed += 1
    return removed


def build_warnings(recipe: Recipe, records: list[ImageRecord], stats: dict[str, SourceStats] | None = None
                   ) -> list[str]:
    """Things the user should fix in the recipe, shown in the summary and the CLI."""
    warnings: list[str] = []
    for name, st in sorted((stats or {}).items()):
        if st.units == 0:
            warnings.append(f"source {name!r} found nothing to read under its path")
    for cfg in recipe.sources:
        warnings.extend(f"source {cfg.name!r}: {note}" for note in get_source(cfg).notes)
    from medvl.generate import count_label_warnings, source_rules

    warnings.extend(count_label_warnings(source_rules(recipe.sources), label_spaces(records)))
    if "zh" in recipe.generation.languages and recipe.generation.zh_share > 0:
        from medvl.generate import missing_zh_labels

        labels = sorted({lb for r in records for lb in r.labels} | {g.label for r in records for g in r.regions})
        missing = missing_zh_labels(labels, recipe.generation.label_zh)
        if missing:
            shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
            warnings.append(f"{len(missing)} label(s) have no Chinese name and stay English in Chinese samples: "
                            f"{shown}; add them to generation.label_zh")
    return warnings


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def summarize(recipe: Recipe, records: list[ImageRecord], samples: list[Sample], rejects: list[Reject],
              stats: dict[str, SourceStats]) -> dict[str, Any]:
    kept_by_source = Counter(r.dataset for r in records)
    curated_out = Counter(r.source for r in rejects if r.stage in ("dedup", "audit"))
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
        "records": len(records),
        "samples": len(samples),
        "rejects": len(rejects),
        "rejects_by_stage": dict(sorted(Counter(r.stage for r in rejects).items())),
        "records_by_modality": dict(sorted(Counter(r.modality for r in records).items())),
        "records_by_split": dict(sorted(Counter(r.split or "none" for r in records).items())),
        "samples_by_kind": dict(sorted(Counter(s.kind for s in samples).items())),
        "samples_by_lang": dict(sorted(Counter(s.lang for s in samples).items())),
    }


def run_build(recipe: Recipe, out_dir: Path, workers: int | None = None, overwrite: bool = False,
              progress: Callable[[int, int], None] | None = None) -> BuildResult:
    from medvl.export import run_exports
    from medvl.export.manifest import ManifestEntry, write_manifest

    out_dir = Path(out_dir).resolve()
    if not recipe.salt:
        raise BuildError("the recipe has no `salt`: set a secret string (e.g. `salt: <random text>`); patient keys "
                         "are HMACs of patient ids under it, and without a secret they could be reversed")
    prepare_out_dir(out_dir, overwrite)
    records, rejects, stats = load_all(recipe, out_dir, workers or recipe.workers, progress)
    owners = label_owners(records)  # before merging: which source's own records use which label
    records, cur_rejects, report = curate(recipe, records, out_dir)
    rejects += cur_rejects
    remove_orphans(out_dir, records)
    samples = generate(recipe, records)
    problems = duplicate_ids([], samples)
    if problems:
        raise BuildError("samples with the same id: " + "; ".join(problems[:5]))
    paths = PathScrubber(recipe, out_dir)
    rejects = sorted((paths.reject(r) for r in rejects), key=lambda r: (r.source, r.item, r.stage, r.reason))
    lonely = lonely_labels(recipe, owners, [tuple(p) for p in report.merged_source_pairs])

    write_jsonl(out_dir / "records.jsonl", (r.to_dict() for r in records))
    write_jsonl(out_dir / "samples.jsonl", (s.to_dict() for s in samples))
    write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in rejects))
    (out_dir / "recipe.yaml").write_text(_recipe_yaml(recipe), encoding="utf-8")
    summary = summarize(recipe, records, samples, rejects, stats)
    summary["splits"] = asdict(report.split)
    summary["curation"] = {k: v for k, v in asdict(report).items() if k not in ("split", "warnings")}
    summary["labels_in_one_source"] = lonely
    summary["warnings"] = [paths(w) for w in build_warnings(recipe, records, stats) + report.warnings
                           + lonely_warnings(lonely)]
    # written before the exports: the dataset card reports its curation notes and warnings
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    entries = run_exports(recipe.exports, records, samples, out_dir, recipe, rejects)
    n_images = len({r.image for r in records})
    n_masks = len({r.mask for r in records if r.mask})
    base = [
        ManifestEntry(path="records.jsonl", format="medvl-records", split=None, samples=len(records), images=n_images),
        ManifestEntry(path="samples.jsonl", format="medvl-samples", split=None, samples=len(samples), images=n_images),
        ManifestEntry(path="rejects.jsonl", format="medvl-rejects", split=None, samples=len(rejects), images=0),
        ManifestEntry(path="summary.json", format="medvl-summary", split=None, samples=0, images=0),
        ManifestEntry(path="recipe.yaml", format="medvl-recipe", split=None, samples=0, images=0),
        ManifestEntry(path="images/", format="png", split=None, samples=0, images=n_images),
    ]
    if n_masks:
        base.append(ManifestEntry(path="masks/", format="png-label-map", split=None, samples=0, images=n_masks))
    write_manifest(out_dir, base + entries, {"recipe": recipe.name, "seed": recipe.seed})
    return BuildResult(out_dir=out_dir, records=records, samples=samples, rejects=rejects, stats=stats, summary=summary)


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


def _recipe_yaml(recipe: Recipe) -> str:
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
