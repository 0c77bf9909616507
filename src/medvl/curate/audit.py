"""Contamination audit: which training images / questions also occur in benchmark data.

Training side (:func:`load_train`): a ``medvl build`` output (``records.jsonl`` + ``images/``, plus the
user turns of ``samples.jsonl``; train split unless ``all_splits``), a LLaVA JSON / JSONL file (image
paths + conversations), or a plain folder of images. Benchmark side: items of any registered benchmark
loader (``EvalItem.images`` are paths or bytes, ``EvalItem.question``).

Matches (:func:`run_audit`):
- ``md5``: the MD5 of the image file bytes is equal (``md5_of: "file"``), or the MD5 of the decoded
  canonical RGB pixels is equal (``md5_of: "pixels"``: a lossless re-encode of the same pixels);
- ``perceptual``: the ``imagehash`` pHash within ``phash_distance`` bits OR the dHash within
  ``dhash_distance`` bits (re-encodes, resized, re-windowed or slightly cropped copies; pHash and dHash fail
  on different edits, so either one decides; defaults measured in ``tests/test_phash_recall.py``, see
  :data:`medvl.curate.phash.PHASH_THRESHOLD`); each entry gives both distances and ``matched_hashes``; flat
  images (no structure to hash) are not compared;
- ``question``: a benchmark question whose normalized text equals a training question, or whose word
  n-grams are mostly (``ngram_overlap``) contained in one. Questions repeated over more than
  ``template_repeats`` training images are templates, counted in the summary but not listed per image.

Every image overlap names the MD5 of the training image file (``md5``) and, when the build records carry
them, the training record's ``source_md5`` (MD5 of the source file bytes) and ``pixel_md5`` (MD5 of the
source pixels before resizing, :func:`medvl.curate.phash.pixel_md5` of :func:`~medvl.curate.phash.canonical_rgb`),
plus the benchmark image's ``bench_md5`` / ``bench_pixel_md5``; ``curation.exclude_file`` of a recipe can
point at ``overlaps.json`` and ``medvl build`` drops those images, also after a rebuild with other settings."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from medvl.curate.audit_text import match_questions, normalize_question
from medvl.curate.phash import (DHASH_THRESHOLD, PHASH_THRESHOLD, canonical_rgb, hamming, near_pairs_between,
                                 perceptual_hashes, pixel_md5)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


@dataclass
class Fingerprint:
    """Hashes of one image: file MD5, canonical-pixel MD5, pHash / dHash (16 hex digits, None when flat), or
    an error."""

    md5: str
    pixel_md5: str | None = None
    phash: str | None = None
    dhash: str | None = None
    error: str | None = None


def fingerprint(data: bytes, name: str = "<bytes>") -> Fingerprint:
    """Hashes of encoded image bytes; a decoding problem is returned in ``error`` (naming ``name``)."""
    fp = Fingerprint(md5=hashlib.md5(data).hexdigest())
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = canonical_rgb(im)
    except UnidentifiedImageError:
        fp.error = f"{name}: cannot decode image (not a recognised image format)"
        return fp
    except Exception as e:  # noqa: BLE001 - any decoder failure is reported, never fatal
        detail = re.sub(r" at 0x[0-9a-fA-F]+", "", str(e))
        fp.error = f"{name}: cannot decode image ({type(e).__name__}: {detail})"
        return fp
    fp.pixel_md5 = pixel_md5(rgb)
    fp.phash, fp.dhash = perceptual_hashes(rgb)
    return fp


def _fingerprint_source(src: str | bytes, name: str) -> Fingerprint:
    if isinstance(src, bytes):
        return fingerprint(src, name)
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        return Fingerprint(md5="", error=f"{name}: cannot read ({e.strerror})")
    return fingerprint(data, name)


def fingerprint_all(sources: Sequence[str | bytes], names: Sequence[str] | None = None, workers: int = 1,
                    progress: Progress | None = None, what: str = "hashing") -> list[Fingerprint]:
    """Fingerprints of many images (paths or bytes), in order; errors name ``names[i]`` (default: the path).
    ``workers`` > 1 hashes in that many processes."""
    names = list(names) if names is not None else [s if isinstance(s, str) else "<bytes>" for s in sources]
    if workers > 1 and len(sources) > 64:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            it: Iterable[Fingerprint] = ex.map(_fingerprint_source, sources, names, chunksize=32)
            return list(progress(it, len(sources), what) if progress else it)
    pairs = list(zip(sources, names))
    it2 = progress(pairs, len(pairs), what) if progress else pairs
    return [_fingerprint_source(s, n) for s, n in it2]


# ------------------------------------------------------------------------------------------- inputs

@dataclass
class TrainQuestion:
    text: str
    image: str | None  # train image (relative path) the question is about, None for text-only items
    sample: str  # sample / conversation id


@dataclass
class TrainSet:
    """Training images (relative path -> absolute path, record ids) and the human questions."""

    root: Path
    kind: str  # "build", "llava" or "folder"
    images: dict[str, Path] = field(default_factory=dict)
    records: dict[str, list[str]] = field(default_factory=dict)  # image rel path -> record ids
    record_md5s: dict[str, dict[str, str | None]] = field(default_factory=dict)  # record id -> source_md5, pixel_md5
    questions: list[TrainQuestion] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_jsonl(path: Path, problems: list[str]) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(f"{path}:{n}: not JSON ({e.msg})")


def _load_build(root: Path, all_splits: bool) -> TrainSet:
    ts = TrainSet(root=root, kind="build")
    splits: dict[str, str | None] = {}
    for d in _read_jsonl(root / "records.jsonl", ts.problems):
        rid, rel, split = d.get("id"), d.get("image"), d.get("split")
        if not isinstance(rel, str) or not rid:
            ts.problems.append(f"{root / 'records.jsonl'}: record {rid!r} lacks 'id' or 'image'")
            continue
        splits[rid] = split
        if all_splits or split == "train":
            ts.images[rel] = root / rel
            ts.records.setdefault(rel, []).append(rid)
            ts.record_md5s[rid] = {k: d.get(k) if isinstance(d.get(k), str) else None
                                   for k in ("source_md5", "pixel_md5")}
    samples = root / "samples.jsonl"
    if samples.is_file():
        for s in _read_jsonl(samples, ts.problems):
            split = s.get("split") or splits.get(s.get("record_id") or "")
            if not (all_splits or split == "train"):
                continue
            imgs = s.get("images") or []
            for t in s.get("turns") or []:
                if t.get("role") == "user" and t.get("text"):
                    ts.questions.append(TrainQuestion(t["text"], imgs[0] if imgs else None, str(s.get("id"))))
    return ts


def _load_llava(path: Path, image_root: Path | None) -> TrainSet:
    root = image_root or path.parent
    ts = TrainSet(root=root, kind="llava")
    if path.suffix == ".jsonl":
        rows = list(_read_jsonl(path, ts.problems))
    else:
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of LLaVA conversations, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            ts.problems.append(f"{path}: entry [{i}] is not an object")
            continue
        imgs = row.get("image") or []
        imgs = [imgs] if isinstance(imgs, str) else list(imgs)
        for rel in imgs:
            ts.images[rel] = root / rel
        for turn in row.get("conversations") or []:
            if turn.get("from") in ("human", "user") and turn.get("value"):
                ts.questions.append(TrainQuestion(turn["value"], imgs[0] if imgs else None, str(row.get("id", i))))
    return ts


def load_train(path: str | Path, all_splits: bool = False, image_root: str | Path | None = None) -> TrainSet:
    """The training side: a build output folder, a LLaVA JSON/JSONL file, or a folder of images."""
    p = Path(path)
    if p.is_file():
        return _load_llava(p, Path(image_root) if image_root else None)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: neither a folder nor a LLaVA JSON file")
    if (p / "records.jsonl").is_file():
        return _load_build(p, all_splits)
    ts = TrainSet(root=p, kind="folder")
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTS:
            ts.images[f.relative_to(p).as_posix()] = f
    if not ts.images:
        raise FileNotFoundError(f"{p}: no records.jsonl and no images ({', '.join(IMAGE_EXTS)}) found")
    return ts


@dataclass
class BenchData:
    """One benchmark's loaded items."""

    name: str
    data_dir: Path
    items: list[Any]  # EvalItem


def load_benchmark(name: str, data_dir: str | Path, options: dict[str, Any] | None = None) -> BenchData:
    """Items of a registered benchmark (``medvl.eval.types.BENCHMARKS``) with loader ``options``."""
    from medvl.eval.types import BENCHMARKS

    cls = BENCHMARKS.get(name)
    items = cls().load(Path(data_dir), **(options or {}))
    return BenchData(name=name, data_dir=Path(data_dir), items=list(items))


# -------------------------------------------------------------------------------------------- audit

@dataclass
class AuditConfig:
    """Thresholds of the audit (CLI flags mirror these)."""

    phash_distance: int = PHASH_THRESHOLD
    dhash_distance: int = DHASH_THRESHOLD
    ngram: int = 3
    ngram_overlap: float = 0.8
    template_repeats: int = 5  # a question on more training images than this is a template
    workers: int = 1


@dataclass
class AuditResult:
    overlaps: list[dict[str, Any]]  # image-bearing overlaps (each has the train image's "md5")
    text_overlaps: list[dict[str, Any]]  # question matches of text-only training items
    summary: dict[str, Any]
    errors: list[str]


def _display(src: str | bytes, fp: Fingerprint, base: Path) -> str:
    if isinstance(src, bytes):
        return f"<bytes md5={fp.md5}>"
    p = Path(src)
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return p.name


def _entry(**kw: Any) -> dict[str, Any]:
    base = {"md5": None, "source_md5": None, "pixel_md5": None, "train_image": None, "train_record": None,
            "benchmark": None, "benchmark_item": None, "match": None, "distance": None, "dhash_distance": None,
            "matched_hashes": None, "md5_of": None, "bench_image": None, "bench_md5": None, "bench_pixel_md5": None,
            "train_question": None, "bench_question": None, "text_overlap": None}
    base.update(kw)
    return base


def _train_fields(train: TrainSet, rel: str, md5: str) -> list[dict[str, Any]]:
    """The training-side fields of an image overlap, one dict per build record that uses the image (each with
    that record's ``source_md5`` / ``pixel_md5`` when records.jsonl has them), or one without a record."""
    recs = sorted(train.records.get(rel, []))
    if not recs:
        return [{"md5": md5, "train_image": rel}]
    return [{"md5": md5, "train_image": rel, "train_record": r, **train.record_md5s.get(r, {})} for r in recs]


def run_audit(train: TrainSet, benches: Sequence[BenchData], cfg: AuditConfig | None = None,
              progress: Progress | None = None) -> AuditResult:
    """Compare training images and questions with benchmark images and questions."""
    cfg = cfg or AuditConfig()
    errors = list(train.problems)
    rels = sorted(train.images)
    tfps = fingerprint_all([str(train.images[r]) for r in rels], [f"training image {r}" for r in rels], cfg.workers,
                           progress, "hashing training images")
    # unique benchmark images, each with the (benchmark, item) pairs that use it
    keys: dict[Any, int] = {}
    sources: list[str | bytes] = []
    snames: list[str] = []
    users: list[list[tuple[str, str, Path]]] = []
    bench_texts: list[tuple[str, str, str]] = []  # (benchmark, item id, question)
    for b in benches:
        for it in b.items:
            bench_texts.append((b.name, str(it.id), it.question or ""))
            for src in it.images:
                key = ("b", hashlib.md5(src).hexdigest()) if isinstance(src, bytes) else ("p", str(src))
                if key not in keys:
                    keys[key] = len(sources)
                    sources.append(src)
                    snames.append(f"{b.name} item {it.id} image " + ("<bytes>" if isinstance(src, bytes) else
                                  _display(src, Fingerprint(md5=""), b.data_dir)))
                    users.append([])
                users[keys[key]].append((b.name, str(it.id), b.data_dir))
    bfps = fingerprint_all(sources, snames, cfg.workers, progress, "hashing benchmark images")
    errors += [fp.error for fp in tfps + bfps if fp.error]
    by_md5: dict[str, list[int]] = defaultdict(list)
    by_pix: dict[str, list[int]] = defaultdict(list)
    for bi, fp in enumerate(bfps):
        if fp.md5:
            by_md5[fp.md5].append(bi)
        if fp.pixel_md5:
            by_pix[fp.pixel_md5].append(bi)
    pairs: dict[tuple[int, int], tuple[str, str | None]] = {}
    for ti, fp in enumerate(tfps):
        for bi in by_md5.get(fp.md5, []) if fp.md5 else []:
            pairs[(ti, bi)] = ("md5", "file")
        for bi in by_pix.get(fp.pixel_md5, []) if fp.pixel_md5 else []:
            pairs.setdefault((ti, bi), ("md5", "pixels"))
    for ti, bi in near_pairs_between([(f.phash, f.dhash) for f in tfps], [(f.phash, f.dhash) for f in bfps],
                                     cfg.phash_distance, cfg.dhash_distance):
        pairs.setdefault((ti, bi), ("perceptual", None))
    overlaps: list[dict[str, Any]] = []
    for (ti, bi), (match, md5_of) in pairs.items():
        rel, fp, bfp = rels[ti], tfps[ti], bfps[bi]
        dist = {k: hamming(getattr(fp, k), getattr(bfp, k)) if getattr(fp, k) and getattr(bfp, k) else None
                for k in ("phash", "dhash")}
        within = [k for k, t in (("phash", cfg.phash_distance), ("dhash", cfg.dhash_distance))
                  if dist[k] is not None and dist[k] <= t]
        for bname, item, ddir in users[bi]:
            for tf in _train_fields(train, rel, fp.md5):
                overlaps.append(_entry(**tf, benchmark=bname, benchmark_item=item, match=match,
                                       distance=0 if match == "md5" else dist["phash"], dhash_distance=dist["dhash"],
                                       matched_hashes=within if match == "perceptual" else None, md5_of=md5_of,
                                       bench_image=_display(sources[bi], bfp, ddir), bench_md5=bfp.md5 or None,
                                       bench_pixel_md5=bfp.pixel_md5))
    text_overlaps, n_templates = _question_overlaps(train, rels, tfps, bench_texts, cfg, overlaps)
    order = {"md5": 0, "perceptual": 1, "question": 2}
    key = lambda e: (e["benchmark"], e["benchmark_item"], e["train_image"] or "", order[e["match"]],  # noqa: E731
                     e["bench_image"] or "", e["train_record"] or "", e["train_question"] or "")
    overlaps.sort(key=key)
    text_overlaps.sort(key=key)
    summary = _summary(train, rels, tfps, benches, sources, bfps, overlaps, text_overlaps, n_templates, cfg)
    return AuditResult(overlaps, text_overlaps, summary, sorted(set(errors)))


def _question_overlaps(train: TrainSet, rels: list[str], tfps: list[Fingerprint], bench_texts: list[tuple[str, str, str]],
                       cfg: AuditConfig, overlaps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Append question matches on training images to ``overlaps``; return text-only ones and the template count."""
    md5_of = {rel: tfps[i].md5 for i, rel in enumerate(rels)}
    tq: dict[str, list[TrainQuestion]] = defaultdict(list)
    for q in train.questions:
        norm = normalize_question(q.text)
        if norm:
            tq[norm].append(q)
    ttexts = sorted(tq)
    bnorm: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, text) in enumerate(bench_texts):
        norm = normalize_question(text)
        if norm:
            bnorm[norm].append(i)
    btexts = sorted(bnorm)
    matches = match_questions(ttexts, btexts, n=cfg.ngram, min_overlap=cfg.ngram_overlap)
    text_only: list[dict[str, Any]] = []
    templates: set[int] = set()
    for m in matches:
        qs = tq[ttexts[m.train]]
        images = sorted({q.image for q in qs if q.image})
        if len(images) > cfg.template_repeats:
            templates.add(m.train)
            continue
        for bi in bnorm[btexts[m.bench]]:
            bname, item, btext = bench_texts[bi]
            kw = dict(benchmark=bname, benchmark_item=item, match="question", distance=None,
                      train_question=qs[0].text, bench_question=btext, text_overlap=m.overlap)
            for rel in images:
                if md5_of.get(rel):
                    overlaps += [_entry(**tf, **kw) for tf in _train_fields(train, rel, md5_of[rel])]
            if any(not q.image or not md5_of.get(q.image) for q in qs):
                text_only.append(_entry(train_record=sorted(q.sample for q in qs)[0], **kw))
    return text_only, len(templates)


def _summary(train: TrainSet, rels: list[str], tfps: list[Fingerprint], benches: Sequence[BenchData],
             sources: list[str | bytes], bfps: list[Fingerprint], overlaps: list[dict[str, Any]],
             text_overlaps: list[dict[str, Any]], n_templates: int, cfg: AuditConfig) -> dict[str, Any]:
    per_bench: dict[str, dict[str, Any]] = {}
    for b in benches:
        hits = [e for e in overlaps + text_overlaps if e["benchmark"] == b.name]
        per_bench[b.name] = {
            "items": len(b.items),
            "items_with_overlap": len({e["benchmark_item"] for e in hits}),
            "by_match": {k: sum(1 for e in hits if e["match"] == k) for k in ("md5", "perceptual", "question")},
        }
    return {
        "train": {"source": train.kind, "images": len(rels), "unreadable_images": sum(1 for f in tfps if f.error),
                  "questions": len(train.questions)},
        "benchmark_images": len(sources), "unreadable_benchmark_images": sum(1 for f in bfps if f.error),
        "benchmarks": dict(sorted(per_bench.items())),
        "overlaps": len(overlaps), "text_only_overlaps": len(text_overlaps),
        "by_match": {k: sum(1 for e in overlaps if e["match"] == k) for k in ("md5", "perceptual", "question")},
        "train_images_to_exclude": len({e["md5"] for e in overlaps}),
        "template_questions_skipped": n_templates,
        "thresholds": {"phash_distance": cfg.phash_distance, "dhash_distance": cfg.dhash_distance, "ngram": cfg.ngram,
                       "ngram_overlap": cfg.ngram_overlap,
                       "template_repeats": cfg.template_repeats},
    }


def write_audit(result: AuditResult, out_dir: str | Path, max_rows: int = 50) -> tuple[Path, Path]:
    """Write ``overlaps.json`` (``{"overlaps": [...], "text_overlaps": [...], "summary": {...}, "errors": [...]}``)
    and the human summary ``overlaps.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out / "overlaps.json", out / "overlaps.md"
    doc = {"overlaps": result.overlaps, "text_overlaps": result.text_overlaps, "summary": result.summary,
           "errors": result.errors}
    jpath.write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    s = result.summary
    lines = ["# Contamination audit", "",
             f"Training side: {s['train']['source']} with {s['train']['images']} images and "
             f"{s['train']['questions']} questions; {s['benchmark_images']} benchmark images.", "",
             f"**{s['overlaps']} overlaps** on **{s['train_images_to_exclude']} training images** "
             f"(md5 {s['by_match']['md5']}, pHash/dHash {s['by_match']['perceptual']}, question {s['by_match']['question']}); "
             f"{s['text_only_overlaps']} question matches on text-only items; "
             f"{s['template_questions_skipped']} template questions not listed.", "",
             "| benchmark | items | items with overlap | md5 | pHash/dHash | question |", "|---|---:|---:|---:|---:|---:|"]
    for name, b in s["benchmarks"].items():
        m = b["by_match"]
        lines.append(f"| {name} | {b['items']} | {b['items_with_overlap']} | {m['md5']} | {m['perceptual']} | {m['question']} |")
    lines += ["", f"## First {min(max_rows, len(result.overlaps))} overlaps", "",
              "| benchmark | item | match | distance | training image | benchmark image |", "|---|---|---|---:|---|---|"]
    for e in result.overlaps[:max_rows]:
        how = e["match"] + (f" ({e['md5_of']})" if e["md5_of"] else "")
        dist = "" if e["distance"] is None else str(e["distance"])
        lines.append(f"| {e['benchmark']} | {e['benchmark_item']} | {how} | {dist} | {e['train_image']} | "
                     f"{e['bench_image'] or ''} |")
    lines += ["", "## Excluding them", "",
              "Point the recipe at this file and rebuild: `curation: {exclude_file: overlaps.json}`; every",
              "listed training image is dropped (by the MD5 of its file, and of its source file and source pixels",
              "where the build recorded them, so the list survives other build settings).", ""]
    if result.errors:
        lines += ["## Unreadable inputs", ""] + [f"- {e}" for e in result.errors[:max_rows]] + [""]
    mpath.write_text("\n".join(lines), encoding="utf-8")
    return jpath, mpath
