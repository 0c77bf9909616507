"""The dataset card: ``dataset_card.md`` (Hugging Face style, YAML front matter, plots under ``card/``), the
same text as ``README.md`` (where ``datasets.load_dataset(BUILD_DIR)`` and the Hub read a card: its
``configs``/``dataset_info`` metadata, :mod:`medvl.export.card_hub`, load the Parquet splits) and
``dataset_card.html`` (self-contained, plots embedded as base64 PNG).

Counts of records and samples by modality, department, clinical task, kind, language, source dataset and
split; rejects by stage and by reason; the recipe (without its salt or source paths); the file list.
Byte-identical across runs: no timestamps; the bar charts are drawn with Pillow and its built-in font (no
matplotlib: it cost about 0.5 s per chart), PNGs without text chunks.
Prose lives in ``card_template.md`` / ``card_template.html``."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Iterable, Iterator

import yaml

from medvl.core.records import ImageRecord, Reject, Sample
from medvl.export.base import EXPORTS, check_options, clear_outputs, split_sort_key, write_bytes, write_text
from medvl.export.card_hub import README, hub_metadata, loading_lines
from medvl.export.manifest import ManifestEntry

HERE = Path(__file__).parent
NONE = "(unspecified)"
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
KIND_TASKS = {"caption": "image-to-text", "region_caption": "image-to-text", "perception_qa": "visual-question-answering",
              "instruction_qa": "visual-question-answering", "conversation": "visual-question-answering",
              "text": "question-answering"}
DEFAULTS: dict[str, Any] = {"plots": True, "top": 25}

Table = tuple[str, str, list[str], list[list[Any]]]  # key, title, header, rows


def _counts(key: str, title: str, col: str, values: Counter, top: int) -> Table:
    c: Counter = Counter()
    for v, n in values.items():
        c[NONE if v is None or v == "" else str(v)] += n
    total = sum(c.values()) or 1
    items = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [[k, n, f"{100 * n / total:.1f}%"] for k, n in items[:top]]
    if len(items) > top:
        rest = sum(n for _, n in items[top:])
        rows.append([f"({len(items) - top} more)", rest, f"{100 * rest / total:.1f}%"])
    return key, title, ["value", col, "share"], rows


def reason_class(r: Reject) -> str:
    """A reject reason with its specifics (ids, files, numbers, quoted values) blanked, so reasons group."""
    text = r.reason
    for s in sorted({r.item, r.source} - {""}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w/.@-]){re.escape(s)}(?![\w/.@-])", "{item}", text)
    text = re.sub(r"[^\s:;,()]*#[^\s:;,()]*", "{id}", text)
    text = re.sub(r"[^\s:;,()]+/[^\s:;,()]+|[^\s:;,()]+\.(?:png|jpe?g|tiff?|bmp|dcm|nii|gz|mha|mhd|nrrd|json|csv|txt)\b",
                  "{file}", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\b[0-9a-fA-F]{8,}\b", "{hash}", text)
    text = re.sub(r"\b\d+(?:\.\d+)?\b", "N", text)
    text = re.sub(r"^(?:\{item\}|\{id\}|\{file\})\s*:\s*", "", text).strip()
    return text[:120]


@dataclass
class Tally:
    """Everything the card counts, gathered in one pass over records, samples and rejects."""

    by_ds: dict[str, Counter] = field(default_factory=dict)  # dataset -> split -> records
    modality: Counter = field(default_factory=Counter)
    department: Counter = field(default_factory=Counter)
    clinical_task: Counter = field(default_factory=Counter)
    task: Counter = field(default_factory=Counter)
    licences: set = field(default_factory=set)
    kinds: Counter = field(default_factory=Counter)
    langs: Counter = field(default_factory=Counter)
    sample_splits: Counter = field(default_factory=Counter)
    kind_lang: Counter = field(default_factory=Counter)
    reject_stages: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    records: int = 0
    samples: int = 0
    rejects: int = 0


def tally(records: Iterable[ImageRecord], samples: Iterable[Sample], rejects: Iterable[Reject]) -> Tally:
    t = Tally()
    unsplit: Counter = Counter()  # record id -> samples without a split of their own (they take the record's)
    for s in samples:
        t.samples += 1
        t.kinds[s.kind] += 1
        t.langs[s.lang] += 1
        if s.split is None:
            unsplit[s.record_id or ""] += 1
        else:
            t.sample_splits[s.split] += 1
        t.kind_lang[(s.kind, s.lang)] += 1
    for r in records:
        t.records += 1
        t.by_ds.setdefault(r.dataset, Counter())[r.split or NONE] += 1
        t.modality[r.modality] += 1
        t.department[r.department] += 1
        t.clinical_task[r.clinical_task] += 1
        t.task[r.task] += 1
        if r.licence:
            t.licences.add(r.licence)
        if unsplit and r.id in unsplit:
            t.sample_splits[r.split] += unsplit.pop(r.id)
    if unsplit:
        t.sample_splits[None] += sum(unsplit.values())
    for r in rejects:
        t.rejects += 1
        t.reject_stages[r.stage] += 1
        t.reasons[(r.stage, reason_class(r))] += 1
    return t


def collect_tables(t: Tally, top: int) -> list[Table]:
    """All count tables of the card, in display order."""
    splits = sorted({s for c in t.by_ds.values() for s in c}, key=split_sort_key)
    ds_rows = [[ds, *[t.by_ds[ds][s] for s in splits], sum(t.by_ds[ds].values())] for ds in sorted(t.by_ds)]
    tables: list[Table] = [
        ("records_by_dataset_split", "Records by source dataset and split", ["dataset", *splits, "total"], ds_rows),
        _counts("records_by_modality", "Records by modality", "records", t.modality, top),
        _counts("records_by_department", "Records by department", "records", t.department, top),
        _counts("records_by_clinical_task", "Records by clinical task", "records", t.clinical_task, top),
        _counts("records_by_source_task", "Records by source task", "records", t.task, top),
        _counts("samples_by_kind", "Samples by kind", "samples", t.kinds, top),
        _counts("samples_by_language", "Samples by language", "samples", t.langs, top),
        _counts("samples_by_split", "Samples by split", "samples", t.sample_splits, top),
        ("samples_by_kind_language", "Samples by kind and language", ["kind", "language", "samples"],
         [[k, lang, n] for (k, lang), n in sorted(t.kind_lang.items())]),
        _counts("rejects_by_stage", "Rejected items by stage", "rejects", t.reject_stages, top),
    ]
    tables.append(("rejects_by_reason", "Rejected items by reason", ["stage", "reason", "rejects"],
                   [[st, why, n] for (st, why), n in sorted(t.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]))
    return tables


PLOTTED = ("records_by_modality", "records_by_department", "records_by_clinical_task", "samples_by_kind",
           "samples_by_language", "rejects_by_stage")


def _nice_step(top: int, ticks: int = 6) -> int:
    """An integer axis step of 1, 2 or 5 times a power of ten giving at most ``ticks`` intervals up to ``top``."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if top / (step * m) <= ticks:
                return step * m
        step *= 10


def bar_png(title: str, rows: list[list[Any]]) -> bytes:
    """A horizontal bar chart of (label, count) rows as PNG bytes, drawn with Pillow and its built-in font
    (no timestamps or text chunks: identical bytes on every run with one Pillow release). Layout: title, one
    bar per row from the top with its label left of the axis and its count right of the bar, an integer
    x axis with ticks and the label "count"."""
    from PIL import Image, ImageDraw, ImageFont

    labels = [str(r[0])[:40] for r in rows]
    values = [max(0, int(r[1])) for r in rows]
    font, small, bold = ImageFont.load_default(12), ImageFont.load_default(11), ImageFont.load_default(14)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, f: Any) -> int:
        return int(probe.textlength(text, font=f))

    bar_h, gap = 20, 8
    left = 12 + max([width(t, font) for t in labels] + [0]) + 8
    right = 640 - 12 - width(f" {max(values + [0])}", small) - 4
    top, n = 40, max(len(values), 1)
    bottom = top + n * (bar_h + gap)
    w, h = 640, bottom + 44
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((w // 2, 12), title, fill="black", font=bold, anchor="mt")
    vmax = max(values + [1])
    step = _nice_step(vmax)
    span = step * -(-vmax // step)
    scale = (right - left) / span
    for k in range(0, span + 1, step):  # grid and ticks
        x = left + round(k * scale)
        d.line([(x, top - 4), (x, bottom)], fill="#e5e5e5")
        d.line([(x, bottom), (x, bottom + 4)], fill="black")
        d.text((x, bottom + 6), str(k), fill="black", font=small, anchor="mt")
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * (bar_h + gap)
        x1 = left + round(v * scale)
        if v:
            d.rectangle([left, y, max(left, x1 - 1), y + bar_h - 1], fill="#4c72b0")
        d.text((left - 8, y + bar_h // 2), label, fill="black", font=font, anchor="rm")
        d.text((x1 + 4, y + bar_h // 2), str(v), fill="black", font=small, anchor="lm")
    d.line([(left, top - 4), (left, bottom)], fill="black")
    d.line([(left, bottom), (right, bottom)], fill="black")
    d.text(((left + right) // 2, bottom + 24), "count", fill="black", font=font, anchor="mt")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def front_matter(t: Tally, recipe: Any, entries: list[ManifestEntry], out_dir: Path) -> str:
    """The YAML block of a Hugging Face dataset card."""
    lic = sorted({re.sub(r"[\s_]+", "-", x.strip().lower()) for x in t.licences})
    n = t.samples
    meta: dict[str, Any] = {
        "pretty_name": getattr(recipe, "name", None) or "medvl corpus",
        "license": lic[0] if len(lic) == 1 else ("other" if lic else "unknown"),
        "language": sorted(t.langs) or ["en"],
        "task_categories": sorted({KIND_TASKS.get(k, "visual-question-answering") for k in t.kinds}),
        "size_categories": [next((c for lim, c in SIZE_CATEGORIES if n < lim), "n>100M")],
        "tags": ["medical", *sorted({m.lower() for m in t.modality if m})],
    }
    meta.update(hub_metadata(entries, out_dir))
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def recipe_rows(recipe: Any) -> tuple[list[list[str]], list[list[Any]]]:
    """Recipe facts (never the salt or source paths): settings rows and one row per source."""
    if recipe is None:
        return [["recipe", "(not given)"]], []
    g, c, im = recipe.generation, recipe.curation, recipe.image
    settings = [["name", recipe.name], ["seed", str(recipe.seed)],
                ["generator", g.generator], ["kinds", json.dumps(g.kinds, sort_keys=True)],
                ["languages", ", ".join(g.languages)], ["zh_share", str(g.zh_share)],
                ["splits", json.dumps(c.splits, sort_keys=True)], ["dedup", str(c.dedup)],
                ["excluded MD5s", str(len(c.exclude_md5)) + (" + file" if c.exclude_file else "")],
                ["image max_side / min_side", f"{im.max_side} / {im.min_side}"], ["exports", ", ".join(recipe.exports)]]
    sources = [[s.name, s.format, s.modality, s.department, s.clinical_task, s.task, s.licence] for s in recipe.sources]
    return settings, sources


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    cell = lambda v: (NONE if v is None else str(v)).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    def td(v: Any) -> str:
        cls = ' class="n"' if isinstance(v, int) else ""
        return f"<td{cls}>{html.escape(NONE if v is None else str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(td(v) for v in r) + "</tr>\n" for r in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def build_notes(out_dir: Path) -> list[Table]:
    """Tables from the build's ``summary.json`` (written before the exports): what curation merged and grouped,
    labels only one source of a cohort uses, and the build's warnings."""
    p = out_dir / "summary.json"
    if not p.is_file():
        return []
    summary = json.loads(p.read_text(encoding="utf-8"))
    cur = summary.get("curation") or {}
    tables: list[Table] = []
    if cur:
        rows = [["identical copies merged into one record", cur.get("merged_duplicates", 0)],
                ["... of which added labels, boxes or a view", cur.get("merges_adding_annotations", 0)],
                ["... of which across sources", cur.get("merged_across_sources", 0)],
                ["near-duplicate pairs of different patients", cur.get("near_duplicate_pairs", 0)],
                ["... kept in one split", cur.get("near_duplicate_links", 0)],
                ["... in different splits (listed in summary.json)", cur.get("near_duplicates_straddling_count", 0)],
                ["datasets whose classes co-occur (labels not exhaustive)",
                 ", ".join(cur.get("non_exhaustive_datasets") or []) or "none"]]
        tables.append(("curation", "Curation: merged copies and near-duplicates", ["", "count"], rows))
    for src, f in sorted((summary.get("figure_pipeline") or {}).items()):
        steps = [("figures read", "figures"), ("well-formed", "well_formed"),
                 ("after the medical-term filter", "after_text_filter"),
                 ("after the image filter (size, medical classifier)", "after_image_filter"),
                 ("after dedup and curation", "after_dedup_and_curation"),
                 ("rewritten by the model (alignment + instruction VQA)", "rewritten_by_model"),
                 ("rewrites rejected (the caption kept as the alignment answer)", "rewrite_rejected")]
        tables.append((f"figure_pipeline_{src}", f"Figure pipeline (PubMedVision): {src}", ["step", "figures"],
                       [[label, f.get(key, 0)] for label, key in steps]))
    txt = summary.get("text_only")
    if txt:
        rows = [["text-only samples (Text-Single QA + Text-Multi dialogue)", txt["samples"]],
                *[[f"... from {k}", v] for k, v in sorted(txt["by_source"].items())],
                *[[f"... task {k}", v] for k, v in sorted(txt["by_task"].items())],
                *[[f"... language {k}", v] for k, v in sorted(txt["by_lang"].items())],
                ["duplicates dropped (exact or MinHash near-duplicates)", txt["duplicates_dropped"]]]
        tables.append(("text_only", "Text-only samples", ["", "count"], rows))
    vid = summary.get("video")
    if vid:
        tables.append(("video", "Video-derived records", ["", "count"],
                       [[k.replace("_", " "), v] for k, v in vid.items() if not isinstance(v, dict)]))
    mg = summary.get("model_generation")
    if mg:
        rows = [[k.replace("_", " "), mg[k]] for k in ("model", "model_samples", "translated", "figures_rewritten",
                                                       "rejected", "exchanges", "prompt_tokens",
                                                       "completion_tokens", "cost") if k in mg]
        tables.append(("model_generation", "Model-written samples", ["", "value"], rows))
    lonely = summary.get("labels_in_one_source") or []
    if lonely:
        tables.append(("labels_in_one_source", "Labels used by only one source of a cohort",
                       ["label", "only in", "similar labels of the other sources", "cohort"],
                       [[x["label"], x["only_in"], ", ".join(x["similar"]), ", ".join(x["cohort"])] for x in lonely]))
    warnings = summary.get("warnings") or []
    if warnings:
        tables.append(("warnings", "Build warnings", ["warning"], [[w] for w in warnings]))
    return tables


def _read_rejects(out_dir: Path) -> Iterator[Reject]:
    p = out_dir / "rejects.jsonl"
    if not p.is_file():
        return
    with open(p, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                yield Reject(**{k: d.get(k, "") for k in ("source", "item", "reason", "stage")})


def corpus_tally(corpus, out_dir: Path) -> Tally:
    """The card's counts: one pass over the corpus's records, samples and rejects."""
    rejects = corpus.rejects()
    return tally(corpus.records(), corpus.samples(), rejects if rejects is not None else _read_rejects(Path(out_dir)))


def plots(t: Tally, options: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The card's bar charts (PNG bytes by table key) for the counts ``t`` and the card's ``options``; a build draws
    them in its counting task, beside the other exports, and hands them to :func:`export_card`."""
    opts = check_options("card", options, DEFAULTS)
    if not opts["plots"]:
        return {}
    return {key: bar_png(title, rows) for key, title, _, rows in collect_tables(t, int(opts["top"]))
            if rows and key in PLOTTED}


@EXPORTS.register("card")
def export_card(corpus, out_dir: Path, recipe=None, *, options=None, entries=None, tallied: Tally | None = None,
                drawn: dict[str, bytes] | None = None) -> list[ManifestEntry]:
    """Write ``dataset_card.md`` (and the same text as ``README.md``), ``dataset_card.html`` and ``card/*.png``;
    the corpus's rejects, or
    ``<out_dir>/rejects.jsonl`` when it has none. One streamed pass over records, samples and rejects
    (:func:`corpus_tally`), unless ``tallied`` brings its result (the build tallies beside the other exports, and
    draws the plots there: ``drawn``, from :func:`plots` with these options)."""
    opts = check_options("card", options, DEFAULTS)
    out_dir = Path(out_dir)
    entries = list(entries or [])
    t = tallied if tallied is not None else corpus_tally(corpus, out_dir)
    clear_outputs(out_dir / "card", ["*.png"])
    tables = collect_tables(t, int(opts["top"])) + build_notes(out_dir)
    n_images = corpus.n_images()
    summary_rows = [["records", t.records], ["samples", t.samples], ["images", n_images],
                    ["source datasets", len(t.by_ds)], ["rejected items", t.rejects]]
    out: list[ManifestEntry] = []
    md_sections, html_sections = [], []
    for key, title, header, rows in tables:
        md, ht = f"### {title}\n\n", f"<h3>{html.escape(title)}</h3>\n"
        if not rows:
            md, ht = md + "(none)\n", ht + "<p>(none)</p>\n"
        else:
            md, ht = md + _md_table(header, rows), ht + _html_table(header, rows)
            if opts["plots"] and key in PLOTTED:
                png = drawn[key] if drawn and key in drawn else bar_png(title, rows)
                write_bytes(out_dir / "card" / f"{key}.png", png)
                out.append(ManifestEntry(f"card/{key}.png", "png", None, None, None, {"plot": key}))
                md += f"\n![{title}](card/{key}.png)\n"
                b64 = base64.b64encode(png).decode("ascii")
                ht += f'<img alt="{html.escape(title)}" src="data:image/png;base64,{b64}">\n'
        md_sections.append(md + "\n")
        html_sections.append(ht)
    settings, sources = recipe_rows(recipe)
    src_header = ["source", "format", "modality", "department", "clinical task", "task", "licence"]
    file_rows = [[e.path, e.format, e.split, e.samples] for e in sorted(entries, key=lambda e: e.path)]
    file_header = ["path", "format", "split", "samples"]
    loading_md, loading_html = loading_lines(entries)
    langs = ", ".join(sorted(t.langs)) or "no language"
    common = {"title": getattr(recipe, "name", None) or "medvl corpus",
              "n_datasets": str(len(t.by_ds)), "languages": langs}
    md_parts = {
        "front_matter": front_matter(t, recipe, entries, out_dir),
        "summary": _md_table(["", "count"], summary_rows), "loading": loading_md, "sections": "".join(md_sections),
        "files": _md_table(file_header, file_rows) if file_rows else "(this card only)\n",
        "recipe": _md_table(["setting", "value"], settings) + ("\n" + _md_table(src_header, sources) if sources else ""),
    }
    html_parts = {
        "summary": _html_table(["", "count"], summary_rows), "loading": loading_html, "sections": "".join(html_sections),
        "files": _html_table(file_header, file_rows) if file_rows else "<p>(this card only)</p>",
        "recipe": _html_table(["setting", "value"], settings) + (_html_table(src_header, sources) if sources else ""),
    }
    md_text = Template((HERE / "card_template.md").read_text(encoding="utf-8")).substitute(common, **md_parts)
    html_text = Template((HERE / "card_template.html").read_text(encoding="utf-8")).substitute(
        {k: html.escape(v) for k, v in common.items()}, **html_parts)
    write_text(out_dir / "dataset_card.md", md_text)
    write_text(out_dir / README, md_text)
    write_text(out_dir / "dataset_card.html", html_text)
    out += [ManifestEntry("dataset_card.md", "dataset-card-md", None, t.samples, n_images),
            ManifestEntry(README, "dataset-card-readme", None, t.samples, n_images),
            ManifestEntry("dataset_card.html", "dataset-card-html", None, t.samples, n_images)]
    return out

