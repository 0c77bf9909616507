"""``bench-build``: a GMAI-MMBench-style multiple-choice benchmark from labelled records.

From a ``medvl build`` output (``records.jsonl`` + ``images/`` + ``masks/``), every record of the chosen
split yields questions at up to four perceptual granularities:

- image level: the record's image-level label is the answer;
- box level: a region's box is drawn on a copy of the image, its label is the answer;
- mask level / contour level: the region's mask (from ``record.mask`` / ``record.mask_values``) is
  overlaid semi-transparently / outlined.

Wrong options come from the same label space (all labels seen in records of the record's dataset, any
split), never include a label that is true for the item, are distinct, and are placed deterministically
(sha256-based stable hashing).

With ``ask`` including ``modality``, every record of the split also yields one image-level
modality-recognition question: the options are modality names, the answer is the record's modality, the
wrong options are other modalities present among the records of the chosen split (at most ``per_label``
questions per modality). Its clinical VQA task is the phrasing file's ``modality_recognition.task``
("Modality Recognition"). Answer letters are spread evenly over the option positions, separately for label
and modality questions. Items that
cannot become a question are listed in ``skipped.jsonl`` with a reason. Output: ``bench.tsv`` in the
GMAI-MMBench VLMEvalKit layout, ``bench_manifest.json`` with counts per department / task / modality /
granularity, the actual number of options per question and the datasets whose label space is smaller than
the requested option count, and ``skipped.jsonl``. Same inputs and seed give byte-identical files."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvl.core.hashing import stable_int
from medvl.core.records import ImageRecord
from medvl.curate.benchquestions import (
    GRANULARITIES,
    QUESTION_KINDS,
    PhrasePool,
    PhrasePoolError,
    load_phrase_pool,
)
from medvl.curate.overlay import draw_box, draw_contour, draw_mask
from medvl.curate.phash import canonical_rgb
from medvl.imaging.boxes import box_inside

LETTERS = "ABCDE"
TSV_COLUMNS = ("index", "image", "question", "A", "B", "C", "D", "E", "answer", "category", "clinical vqa task",
               "department", "perceptual granularity", "modality", "source_record", "source_region")


@dataclass
class BenchBuildConfig:
    """Options of ``bench-build`` (the CLI flags mirror these)."""

    split: str | None = "test"  # records of this split only; None = all splits
    per_label: int | None = 50  # at most this many questions per (dataset, granularity, answer label) / modality
    granularities: tuple[str, ...] = GRANULARITIES  # of label questions (modality questions are image level)
    ask: tuple[str, ...] = ("labels",)  # question kinds: "labels" and/or "modality"
    n_options: int = 4  # 2..5
    seed: int = 0
    lang: str = "en"

    def __post_init__(self) -> None:
        if not 2 <= self.n_options <= 5:
            raise ValueError(f"options must be between 2 and 5, got {self.n_options}")
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities:
            raise ValueError(f"granularity {bad or '(none)'} not allowed; allowed: {', '.join(GRANULARITIES)}")
        bad = [k for k in self.ask if k not in QUESTION_KINDS]
        if bad or not self.ask:
            raise ValueError(f"ask {bad or '(none)'} not allowed; allowed: {', '.join(QUESTION_KINDS)}")
        if self.per_label is not None and self.per_label < 1:
            raise ValueError(f"per-label must be >= 1, got {self.per_label}")


@dataclass
class Candidate:
    """One potential question: a record, a granularity, the region (for box/mask/contour) and the answer;
    ``kind`` "labels" (the answer is a label) or "modality" (the answer is a modality name, image level)."""

    record: ImageRecord
    record_id: str
    granularity: str
    region: int | None
    answer: str
    true_labels: frozenset[str]  # labels (modality names) that must not appear as wrong options
    options: list[str] = field(default_factory=list)
    answer_letter: str = ""
    kind: str = "labels"

    @property
    def key(self) -> str:
        if self.kind == "modality":
            return f"{self.record_id}|modality|"
        return f"{self.record_id}|{self.granularity}|{'' if self.region is None else self.region}"


@dataclass
class BenchBuildResult:
    """What a run produced: paths, the manifest (counts) and the skipped items."""

    tsv: Path
    manifest_path: Path
    skipped_path: Path
    manifest: dict[str, Any]
    skipped: list[dict[str, Any]]


def _skip(rid: str, gran: str | None, region: int | None, code: str, reason: str, kind: str | None = "labels"
          ) -> dict[str, Any]:
    return {"record": rid, "kind": kind, "granularity": gran, "region": region, "code": code, "reason": reason}


def read_records(build_dir: Path) -> tuple[list[ImageRecord], list[dict[str, Any]]]:
    """Records of a build output; unreadable lines become skipped entries naming the line."""
    path = build_dir / "records.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected the output folder of `medvl build`")
    records, skipped = [], []
    known = {f.name for f in fields(ImageRecord)}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                records.append(ImageRecord.from_dict({k: v for k, v in d.items() if k in known}))
            except (ValueError, TypeError, KeyError) as e:
                skipped.append(_skip(f"records.jsonl:{n}", None, None, "bad_record",
                                     f"records.jsonl:{n}: not a record ({type(e).__name__}: {e})", kind=None))
    return records, skipped


def label_spaces(records: Iterable[ImageRecord]) -> dict[str, list[str]]:
    """Per dataset, the sorted labels seen in its records (image labels, region labels, mask labels)."""
    spaces: dict[str, set[str]] = defaultdict(set)
    for r in records:
        s = spaces[r.dataset]
        s.update(r.labels)
        s.update(reg.label for reg in r.regions)
        s.update(lb for v in r.mask_values.values() for lb in (v if isinstance(v, list) else [v]))
    return {d: sorted(x for x in s if x and x.lower() != "background") for d, s in sorted(spaces.items())}


def small_label_spaces(records: Iterable[ImageRecord], spaces: dict[str, list[str]], n_options: int
                       ) -> dict[str, int]:
    """Datasets of ``records`` whose label space is smaller than ``n_options`` -> their label count (their
    questions get fewer options than requested; fewer than 2 labels: no questions at all)."""
    used = sorted({r.dataset for r in records})
    return {d: len(spaces.get(d, [])) for d in used if len(spaces.get(d, [])) < n_options}


def _mask_values(rec: ImageRecord, label: str) -> list[int]:
    return rec.mask_values_for(label)


def plan_candidates(records: list[ImageRecord], spaces: dict[str, list[str]], cfg: BenchBuildConfig
                    ) -> tuple[list[Candidate], list[dict[str, Any]], Counter]:
    """All candidate questions of the records, the skipped ones, and not-applicable counts per granularity."""
    cands: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    na: Counter = Counter()
    for rec in records:
        rid = rec.to_dict()["id"]
        space = spaces.get(rec.dataset, [])
        for gran in cfg.granularities:
            if gran == "image":
                items = [(None, sorted(rec.labels))] if rec.labels else []
            elif gran == "box":
                items = [(i, [r.label]) for i, r in enumerate(rec.regions)]
            else:
                items = [(i, [r.label]) for i, r in enumerate(rec.regions) if rec.mask and r.source == "mask"]
            if not items:
                na[gran] += 1
                continue
            for region, labels in items:
                if len(space) < 2:
                    skipped.append(_skip(rid, gran, region, "too_few_labels",
                                         f"dataset {rec.dataset!r} has {len(space)} label(s) {space}; "
                                         f"a multiple-choice question needs at least 2"))
                    continue
                if region is not None:
                    reg = rec.regions[region]
                    if not box_inside(reg.box, rec.width, rec.height):
                        skipped.append(_skip(rid, gran, region, "bad_box",
                                             f"region box {list(reg.box)} is not inside the {rec.width}x{rec.height} image"))
                        continue
                    if gran in ("mask", "contour") and not _mask_values(rec, reg.label):
                        skipped.append(_skip(rid, gran, region, "no_mask_value",
                                             f"label {reg.label!r} has no value in mask_values of {rec.mask}"))
                        continue
                true = set(labels)
                if region is not None:  # regions with the same box are also true for it
                    true.update(r.label for r in rec.regions if tuple(r.box) == tuple(rec.regions[region].box))
                answer = labels[stable_int(cfg.seed, "answer-label", rid) % len(labels)]
                cands.append(Candidate(rec, rid, gran, region, answer, frozenset(true)))
    return cands, skipped, na


def modality_space(records: Iterable[ImageRecord], pool: PhrasePool) -> dict[str, str]:
    """Modalities of ``records`` (taxonomy key -> the name options use), sorted by key; records without a
    modality contribute none."""
    return {m: pool.modality(m) for m in sorted({r.modality for r in records if r.modality})}


def plan_modality_candidates(records: list[ImageRecord], space: dict[str, str]
                             ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """One image-level modality question per record (answer: its modality's name), and the skipped ones:
    records without a modality, and every record when the split has fewer than 2 modality names."""
    names = sorted(set(space.values()))
    cands: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    for rec in records:
        rid = rec.to_dict()["id"]
        if not rec.modality:
            skipped.append(_skip(rid, "image", None, "no_modality", "record has no modality", kind="modality"))
        elif len(names) < 2:
            skipped.append(_skip(rid, "image", None, "too_few_modalities",
                                 f"the records of the split have {len(names)} modality(ies) {names}; a "
                                 f"multiple-choice question needs at least 2", kind="modality"))
        else:
            name = space[rec.modality]
            cands.append(Candidate(rec, rid, "image", None, name, frozenset({name}), kind="modality"))
    return cands, skipped


def select_per_label(cands: list[Candidate], per_label: int | None, seed: int) -> tuple[list[Candidate], int]:
    """At most ``per_label`` candidates per (dataset, granularity, answer label), and per answer modality for
    modality questions, chosen by stable hash; sorted output (label questions first)."""
    groups: dict[tuple[str, str, str], list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[(c.record.dataset, c.granularity, c.answer) if c.kind == "labels" else ("", "modality", c.answer)].append(c)
    chosen: list[Candidate] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda c: (stable_int(seed, "pick", c.key), c.key))
        chosen.extend(group if per_label is None else group[:per_label])
    order = {g: i for i, g in enumerate(GRANULARITIES)}
    chosen.sort(key=lambda c: (c.kind != "labels", c.record.dataset, order[c.granularity], c.record_id,
                               -1 if c.region is None else c.region))
    return chosen, len(cands) - len(chosen)


def assign_options(cands: list[Candidate], spaces: dict[str, list[str]], n_options: int, seed: int,
                   modality_names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Fill ``options`` / ``answer_letter`` in place; answer positions cycle evenly within each question kind
    and option count. Wrong options: the dataset's labels (label questions), ``modality_names`` (modality
    questions). Returns skipped entries for candidates without any usable wrong option."""
    skipped: list[dict[str, Any]] = []
    by_n: dict[tuple[str, int], list[Candidate]] = defaultdict(list)
    modality_names = sorted(set(modality_names))
    for c in cands:
        space = spaces[c.record.dataset] if c.kind == "labels" else modality_names
        wrong = [lab for lab in space if lab not in c.true_labels]
        if not wrong:
            what = f"label of dataset {c.record.dataset!r}" if c.kind == "labels" else "modality of the split"
            skipped.append(_skip(c.record_id, c.granularity, c.region, "no_wrong_option",
                                 f"every {what} is true for this item", kind=c.kind))
            continue
        wrong.sort(key=lambda lab: (stable_int(seed, "distractor", c.key, lab), lab))
        c.options = wrong[: n_options - 1]
        by_n[(c.kind, len(c.options) + 1)].append(c)
    for (kind, n), group in sorted(by_n.items()):
        group = sorted(group, key=lambda c: (stable_int(seed, "position", c.key), c.key))
        offset = (stable_int(seed, "offset", n) if kind == "labels" else stable_int(seed, "offset", kind, n)) % n
        for rank, c in enumerate(group):
            pos = (rank + offset) % n
            c.options = c.options[:pos] + [c.answer] + c.options[pos:]
            c.answer_letter = LETTERS[pos]
    return skipped


def region_mask(rec: ImageRecord, region: int, label_map: np.ndarray) -> np.ndarray:
    """Boolean mask of one region: pixels with the region label's mask values, inside its box."""
    reg = rec.regions[region]
    m = np.isin(label_map, _mask_values(rec, reg.label))
    x1, y1, x2, y2 = (int(round(v)) for v in reg.box)
    keep = np.zeros_like(m)
    keep[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
    return m & keep


def check_sources(cands: list[Candidate], build_dir: Path) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Drop candidates whose image is unreadable or of the wrong size, or whose mask is missing, misaligned
    or has no pixel of the region (before answer letters are balanced, so the balance holds)."""
    ok: list[Candidate] = []
    skipped: list[dict[str, Any]] = []
    img_state: tuple[str, str] = ("", "")  # (image path, problem or "") of the last record seen
    mask_state: tuple[str, str | np.ndarray] = ("", "")  # (mask path, label map or problem)
    for c in cands:
        rec = c.record
        ipath = build_dir / rec.image
        if img_state[0] != rec.image:
            try:
                with Image.open(ipath) as im:
                    size = im.size
                bad = "" if size == (rec.width, rec.height) else \
                    f"{rec.image}: image is {size[0]}x{size[1]}, record says {rec.width}x{rec.height}"
            except OSError as e:
                bad = f"{rec.image}: cannot read image ({e.strerror or type(e).__name__})"
            img_state = (rec.image, bad)
        problem = img_state[1]
        if not problem and c.granularity in ("mask", "contour"):
            mpath = str(rec.mask)
            if mask_state[0] != mpath:
                try:
                    with Image.open(build_dir / mpath) as mm:
                        mask_state = (mpath, np.asarray(mm))
                except OSError as e:
                    mask_state = (mpath, f"{mpath}: cannot read mask ({e.strerror or type(e).__name__})")
            lm = mask_state[1]
            if isinstance(lm, str):
                problem = lm
            elif lm.shape[:2] != (rec.height, rec.width):
                problem = f"{mpath}: mask shape {lm.shape[:2]} differs from image {(rec.height, rec.width)}"
            elif not region_mask(rec, c.region, lm).any():  # type: ignore[arg-type]
                problem = f"{mpath}: no pixel of label {rec.regions[c.region].label!r} inside its box"  # type: ignore[index]
        if problem:
            skipped.append(_skip(c.record_id, c.granularity, c.region, "bad_source", problem, kind=c.kind))
        else:
            ok.append(c)
    return ok, skipped


def render(c: Candidate, build_dir: Path, pool: PhrasePool) -> bytes:
    """The question image (PNG bytes): the record image with the region drawn for box/mask/contour."""
    rec = c.record
    img_path = build_dir / rec.image
    with Image.open(img_path) as im:
        rgb = canonical_rgb(im)
    if c.granularity != "image":
        style = pool.draw.get(c.granularity, {})
        color = tuple(int(v) for v in style.get("color", (255, 0, 0)))
        if c.granularity == "box":
            rgb = draw_box(rgb, rec.regions[c.region].box, color=color)  # type: ignore[index]
        else:
            mask_path = build_dir / str(rec.mask)
            with Image.open(mask_path) as mm:
                label_map = np.asarray(mm)
            if label_map.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"{mask_path}: mask shape {label_map.shape[:2]} differs from image {rgb.shape[:2]}")
            m = region_mask(rec, c.region, label_map)  # type: ignore[arg-type]
            if not m.any():
                raise ValueError(f"{mask_path}: no pixel of label {rec.regions[c.region].label!r} inside its box")  # type: ignore[index]
            if c.granularity == "mask":
                rgb = draw_mask(rgb, m, color=color, alpha=float(style.get("alpha", 0.4)))
            else:
                rgb = draw_contour(rgb, m, color=color)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def build_benchmark(build_dir: str | Path, out_dir: str | Path, cfg: BenchBuildConfig | None = None,
                    progress: Callable[[Iterable[Candidate], int], Iterable[Candidate]] | None = None) -> BenchBuildResult:
    """Make ``bench.tsv``, ``bench_manifest.json`` and ``skipped.jsonl`` in ``out_dir``."""
    cfg = cfg or BenchBuildConfig()
    build_dir, out_dir = Path(build_dir), Path(out_dir)
    pool = load_phrase_pool(cfg.lang)
    if "modality" in cfg.ask and pool.modality_recognition is None:
        raise PhrasePoolError(f"--ask modality: the {cfg.lang!r} phrasing file has no 'modality_recognition' section")
    records, skipped = read_records(build_dir)
    spaces = label_spaces(records)
    chosen_split = [r for r in records if cfg.split is None or r.split == cfg.split]
    cands: list[Candidate] = []
    na: Counter = Counter()
    if "labels" in cfg.ask:
        cands, sk, na = plan_candidates(chosen_split, spaces, cfg)
        skipped += sk
    mod_space = modality_space(chosen_split, pool) if "modality" in cfg.ask else {}
    if "modality" in cfg.ask:
        mcands, sk = plan_modality_candidates(chosen_split, mod_space)
        cands += mcands
        skipped += sk
    selected, dropped = select_per_label(cands, cfg.per_label, cfg.seed)
    selected, sk = check_sources(selected, build_dir)
    skipped += sk
    skipped += assign_options(selected, spaces, cfg.n_options, cfg.seed, mod_space.values())
    selected = [c for c in selected if c.answer_letter]
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv_path = out_dir / "bench.tsv"
    counts: dict[str, Counter] = {k: Counter() for k in ("department", "task", "modality", "granularity", "dataset", "answer")}
    n_written = 0
    n_opts: Counter = Counter()
    iterable = progress(selected, len(selected)) if progress else selected
    with tsv_path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(TSV_COLUMNS)
        for c in iterable:
            rec = c.record
            try:
                png = render(c, build_dir, pool)
            except (OSError, ValueError) as e:
                skipped.append(_skip(c.record_id, c.granularity, c.region, "render_failed",
                                     f"{rec.image}: {e}".replace(str(build_dir) + "/", ""), kind=c.kind))
                continue
            pick = stable_int(cfg.seed, "phrasing", c.key)
            if c.kind == "modality":
                task_name = pool.modality_recognition.name  # type: ignore[union-attr]
                question = pool.modality_question(pick)
            else:
                task_name = rec.clinical_task or "unspecified"
                question = pool.question(rec.clinical_task, c.granularity, rec.modality, pick)
            opts = c.options + [""] * (len(LETTERS) - len(c.options))
            gran_name = f"{c.granularity} level"
            w.writerow([n_written, base64.b64encode(png).decode("ascii"), question, *opts, c.answer_letter,
                        task_name, task_name, rec.department or "", gran_name, pool.modality(rec.modality), c.record_id,
                        "" if c.region is None else c.region])
            n_written += 1
            n_opts[str(len(c.options))] += 1
            for k, v in (("department", rec.department or "unspecified"), ("task", task_name),
                         ("modality", rec.modality), ("granularity", gran_name), ("dataset", rec.dataset),
                         ("answer", c.answer_letter)):
                counts[k][v] += 1
    skipped.sort(key=lambda s: (s["record"], s["kind"] or "", s["granularity"] or "",
                                -1 if s["region"] is None else s["region"], s["code"]))
    skipped_path = out_dir / "skipped.jsonl"
    with skipped_path.open("w", encoding="utf-8", newline="\n") as f:
        for s in skipped:
            f.write(json.dumps(s, ensure_ascii=False, sort_keys=True) + "\n")
    manifest = {
        "benchmark": "bench.tsv",
        "layout": "GMAI-MMBench (VLMEvalKit TSV)",
        "config": {"split": cfg.split, "per_label": cfg.per_label, "granularities": list(cfg.granularities),
                   "ask": list(cfg.ask), "options": cfg.n_options, "seed": cfg.seed, "lang": cfg.lang},
        "records_in_split": len(chosen_split),
        "candidates": len(cands),
        "dropped_by_per_label": dropped,
        "questions": n_written,
        "skipped": len(skipped),
        "skipped_by_code": dict(sorted(Counter(s["code"] for s in skipped).items())),
        "not_applicable": dict(sorted(na.items())),
        "label_spaces": spaces,
        "options_per_question": dict(sorted(n_opts.items(), key=lambda kv: int(kv[0]))),
        "small_label_spaces": small_label_spaces(chosen_split, spaces, cfg.n_options) if "labels" in cfg.ask else {},
        **({"modality_space": mod_space} if "modality" in cfg.ask else {}),
        **{f"by_{k}": dict(sorted(v.items())) for k, v in counts.items()},
    }
    manifest_path = out_dir / "bench_manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    return BenchBuildResult(tsv_path, manifest_path, skipped_path, manifest, skipped)
