"""Figures of biomedical papers with their captions: the input of the PubMedVision pipeline (Chen et al., 2024).

One item = one or more images (a figure's panels), its caption, optionally its inline mentions (body sentences
citing the figure), PMCID / PMID and figure id. The data file is JSON Lines or a JSON list (``options.file``,
default: the source path when it is a file, else the only ``*.jsonl`` / ``*.json`` file in the folder). Image
paths are relative to the data file's folder, or to ``options.image_dir`` (relative to that folder). Layouts
(``options.layout``; ``auto`` decides from the first row):

- ``medvl``: ``{"images": ["a.png", "b.png"] | "image": "a.png", "caption": str, "mentions": [str],
  "pmcid": "PMC123", "pmid": "123", "figure_id": "F2"}`` (all but images and caption optional; other keys ignored).
- ``llava_med`` (microsoft/LLaVA-Med), two published forms, both with images named ``<pair_id>.jpg``
  (``llava/data/download_images.py``), looked up in the data file's folder, then ``images/``:
  the figure-caption form of ``llava_med_instruct_fig_captions.json`` (an object of domain -> list, or a list):
  ``{"pair_id": "18627621_F2", "pmid": "18627621", "fig_id": "F2", "fig_label": "Figure 2",
  "fig_caption": str, "in_text_mention": [str | {"tokens": str}], "domain": {...}}``; and the conversation form of
  ``llava_med_alignment_500k.json``: ``{"id": pair id, "image", "conversations": [{"from": "human",
  "value": "<image>\\n..."}, {"from": "gpt", "value": caption}]}``. The instruction files
  (``llava_med_instruct_10k/60k[_inline_mention].json``, same keys, several Q&A turns) hold no caption: their rows
  are rejected, pointing to the figure-caption file.
- ``pmc_oa`` (PMC-OA ``pmc_oa.jsonl``, axiong/pmc_oa): ``{"image": "PMC212319_Fig3_4.jpg", "caption": str,
  "alignment_type": str, "alignment_score": float}``; images are looked up in the data file's folder, then
  ``caption_T060_filtered_top4_sep_v0_subfigures/`` (the folder inside the published ``images.zip``), then
  ``images/caption_T060_filtered_top4_sep_v0_subfigures/``, then ``images/``; PMCID from the file name.

Filters (PubMedVision's): the text filter counts medical terms (:mod:`medvl.curate.medterms`) in
``options.text_fields`` and rejects an item with fewer than ``min_medical_terms`` (stage "text_filter"); the
image filter drops each image smaller than ``min_side`` on either side, then each image a medical-vs-non-medical
classifier (``image_classifier``, :mod:`medvl.imaging.medclass`) scores below ``min_medical_prob`` (stage
"image_filter"). An item whose images are all dropped is rejected; a dropped image of a multi-image item is
listed on its own. A malformed row, a path escaping the dataset folder, a missing image or a first image already
listed by an earlier row -> a reject naming the file, the row and the problem.

Record: one per item; its image is the first kept image, the others are written beside it (``Item.more_arrays``);
``extra`` has ``caption``, ``mentions``, ``pmcid``, ``pmid``, ``figure_id``, ``medical_terms`` (the count) and,
from the read stage, ``images`` / ``image_sizes`` (every kept image, first = the record's). Figures of one paper
(PMCID, else PMID) share one split. Modality: the recipe's ``modality``; else the modality the caption names most
(taxonomy names and synonyms: "CT", "fundus photograph", "immunohistochemistry" -> pathology), else
``options.default_modality`` ("clinical photography")."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from pydantic import Field, field_validator

from medvl.core.records import Reject
from medvl.io.raster import RasterReadError, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

PMC_OA_SUBFIGURES = "caption_T060_filtered_top4_sep_v0_subfigures"
IMAGE_DIRS = {"medvl": [""], "llava_med": ["", "images"],
              "pmc_oa": ["", PMC_OA_SUBFIGURES, f"images/{PMC_OA_SUBFIGURES}", "images"]}
_PMC_NAME = re.compile(r"^(PMC\d+)_(.+?)(?:_\d+)?\.[A-Za-z]+$")


class RowError(ValueError):
    """A row that does not fit its layout (the message says what is wrong)."""


class FigureCaptionOptions(SourceOptions):
    """Options of the ``figure_caption`` source."""

    modality_options: ClassVar[tuple[str, ...]] = ("modality_from_caption", "default_modality")

    file: str | None = Field(None, description="the data file (.jsonl or .json) relative to the source path; unset: "
                             "the source path itself when it is a file, else the only .jsonl/.json file in it")
    layout: Literal["auto", "medvl", "llava_med", "pmc_oa"] = Field("auto", description="row layout; auto: from "
                                                                    "the first row")
    image_dir: str | None = Field(None, description="folder of the images relative to the data file's folder; "
                                  "unset: the layout's usual places")
    text_fields: list[Literal["caption", "mentions"]] = Field(["caption"], min_length=1, description="what the "
                                                              "text filter counts medical terms in")
    min_medical_terms: int = Field(5, ge=0, description="items naming fewer distinct medical terms are rejected "
                                   "(0: no text filter)")
    vocabulary: str | None = Field(None, description="medical vocabulary file (one term per line; relative to the "
                                   "source folder); unset: medvl's (MeSH-derived)")
    min_side: int = Field(336, ge=1, description="images smaller than this on either side are dropped")
    image_classifier: str = Field("builtin", description="'builtin', 'none', a medclass weights file, or "
                                  "'package.module:callable' (uint8 array -> P(medical))")
    min_medical_prob: float = Field(0.5, ge=0.0, le=1.0, description="images the classifier scores lower are "
                                    "dropped")
    modality_from_caption: bool = Field(True, description="take the modality the caption names most")
    default_modality: str = Field("clinical photography", description="modality when the caption names none")

    @field_validator("default_modality")
    @classmethod
    def _modality(cls, v: str) -> str:
        from medvl.taxonomy import MODALITIES, normalize_modality

        canon = normalize_modality(v)
        if canon is None:
            raise ValueError(f"{v!r} is not a known modality; allowed: {', '.join(MODALITIES)}")
        return canon


@SOURCES.register("figure_caption")
class FigureCaptionSource(Source):
    """One unit per figure (row); the text filter runs while enumerating, the image filter while loading."""

    task = "cls"
    Options = FigureCaptionOptions
    opts: FigureCaptionOptions

    def __init__(self, cfg: Any, root: Path | None = None):
        super().__init__(cfg, root)
        if root is None and self.root.is_file():  # the source path names the data file itself
            self.root = self.root.parent
        self._classifier: Any = None

    # enumeration -----------------------------------------------------------------------------------
    def _data_file(self) -> tuple[Path | None, str]:
        """(the data file, "") or (None, the problem)."""
        given = Path(self.cfg.path)
        if self.opts.file:
            path = self.root / self.opts.file
        elif given.is_file():
            path = given
        elif self.root.is_dir():
            found = sorted(p for p in self.root.iterdir() if p.suffix.lower() in (".jsonl", ".json") and p.is_file())
            if len(found) != 1:
                what = ", ".join(p.name for p in found) if found else "none"
                return None, (f"{self.root}: set options.file to the figure list (.jsonl or .json files found: "
                              f"{what})")
            path = found[0]
        else:
            return None, f"{self.root}: dataset folder not found"
        if not self.inside_root(path):
            return None, f"{self.opts.file}: path escapes the dataset folder"
        if not path.is_file():
            return None, f"{self.rel(path)}: figure list not found"
        return path, ""

    def units(self) -> Iterator[Unit | Reject]:
        path, problem = self._data_file()
        if path is None:
            yield self.reject(self.opts.file or ".", problem)
            return
        name = self.rel(path)
        from medvl.curate.medterms import VocabularyError, load_vocabulary

        try:
            vocab = load_vocabulary(self._vocab_path())
        except VocabularyError as e:
            yield self.reject(name, f"options.vocabulary: {e}")
            return
        if self.opts.image_classifier != "none":
            try:
                self.classifier()
            except ValueError as e:
                yield self.reject(name, f"options.image_classifier: {e}")
                return
        layout = None if self.opts.layout == "auto" else self.opts.layout
        seen: dict[str, int] = {}
        for n, row in _rows(path, name):
            where = f"{name}#row{n}"
            if n == 0:  # the file as a whole cannot be read
                yield self.reject(name, f"{name}: {row}")
                return
            if isinstance(row, str):  # a row that is not JSON
                yield self.reject(where, f"{name} row {n}: {row}", stage="validate")
                continue
            try:
                if layout is None:
                    layout = detect_layout(row)
                fig = parse_row(row, layout)
            except RowError as e:
                yield self.reject(where, f"{name} row {n}: {e}", stage="validate")
                continue
            keys, rejects = self._resolve(fig["images"], path.parent, layout, name, n)
            yield from rejects
            if not keys:
                if not rejects:
                    yield self.reject(where, f"{name} row {n}: no image", stage="validate")
                continue
            text = "\n".join([fig["caption"]] * ("caption" in self.opts.text_fields)
                             + fig["mentions"] * ("mentions" in self.opts.text_fields))
            terms = vocab.terms(text)
            if len(terms) < self.opts.min_medical_terms:
                fields = " and ".join(dict.fromkeys(self.opts.text_fields))
                verb = "has" if fields == self.opts.text_fields[0] else "have"
                yield self.reject(where, f"{name} row {n}: {fields} {verb} {len(terms)} medical term"
                                         f"{'s' if len(terms) != 1 else ''} (< {self.opts.min_medical_terms}): "
                                         f"{', '.join(terms) or 'none'}", stage="text_filter")
                continue
            if keys[0] in seen:  # one figure per first image: records are named by it
                yield self.reject(where, f"{name} row {n}: {keys[0]} already listed in row {seen[keys[0]]}",
                                  stage="validate")
                continue
            seen[keys[0]] = n
            yield Unit(key=keys[0], payload={**fig, "images": keys, "row": f"{name} row {n}",
                                             "medical_terms": len(terms), "modality": self._modality(fig["caption"])})

    def _vocab_path(self) -> str | None:
        v = self.opts.vocabulary
        return None if v is None else str(self.root / v) if not Path(v).is_absolute() else v

    def _resolve(self, images: list[str], base: Path, layout: str, name: str, n: int
                 ) -> tuple[list[str], list[Reject]]:
        """Image cells -> paths relative to the root (first folder where the file exists), and a reject for each
        image that escapes the dataset folder or is not found."""
        dirs = [self.opts.image_dir] if self.opts.image_dir is not None else IMAGE_DIRS[layout]
        keys: list[str] = []
        rejects: list[Reject] = []
        for k, cell in enumerate(images, start=1):
            which = f"image {cell!r}" if len(images) == 1 else f"image {k} {cell!r}"
            cands = [base / d / cell for d in dirs]
            if not all(self.inside_root(c) for c in cands):
                rejects.append(self.reject(f"{name}#row{n}", f"{name} row {n}: {which}: path escapes the dataset "
                                                             f"folder"))
                continue
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                looked = ", ".join(sorted({self.rel(c.parent) or "." for c in cands}))
                rejects.append(self.reject(f"{name}#row{n}", f"{name} row {n}: {which}: file not found (looked in "
                                                             f"{looked})"))
                continue
            keys.append(self.rel(hit))
        return keys, rejects

    def _modality(self, caption: str) -> str | None:
        if not self.opts.modality_from_caption:
            return self.opts.default_modality
        return caption_modality(caption) or self.opts.default_modality

    # loading ---------------------------------------------------------------------------------------
    def classifier(self) -> Any:
        """The image classifier of ``options.image_classifier`` (loaded once per process), or None."""
        if self.opts.image_classifier == "none":
            return None
        if self._classifier is None:
            from medvl.imaging.medclass import load_classifier

            self._classifier = load_classifier(self.opts.image_classifier)
        return self._classifier

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        p = unit.payload
        kept = []
        for key in p["images"]:
            try:
                arr = read_raster(self.root / key)
            except RasterReadError as e:
                yield self.reject(key, f"{p['row']}: {key}: {e.problem}")
                continue
            h, w = arr.shape[:2]
            if min(h, w) < self.opts.min_side:
                yield self.reject(key, f"{p['row']}: {key}: image is {w}x{h}, smaller than options.min_side="
                                       f"{self.opts.min_side}", stage="image_filter")
                continue
            clf = self.classifier()
            if clf is not None:
                prob = float(clf.prob_medical(arr))
                if not prob >= self.opts.min_medical_prob:
                    yield self.reject(key, f"{p['row']}: {key}: not a medical image (P(medical) = {prob:.3f} < "
                                           f"options.min_medical_prob={self.opts.min_medical_prob}, classifier "
                                           f"{self.opts.image_classifier})", stage="image_filter")
                    continue
            kept.append(arr)
        if not kept:
            yield self.reject(unit.key, f"{p['row']}: no image of the figure is left", stage="image_filter")
            return
        paper = p["pmcid"] or p["pmid"]
        extra = {"caption": p["caption"], "mentions": list(p["mentions"]), "pmcid": p["pmcid"], "pmid": p["pmid"],
                 "figure_id": p["figure_id"], "medical_terms": p["medical_terms"]}
        if paper:
            extra["volume_key"] = f"paper:{paper}"  # figures of one paper share a split (never stored)
        yield Item(array=kept[0], source_file=unit.key, extra=extra, modality=p["modality"], more_arrays=kept[1:])


# rows and layouts ----------------------------------------------------------------------------------
def _rows(path: Path, name: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, row object or the problem) of a JSON Lines file (row = line number) or a JSON list / an
    object of lists (row = position, from 1). A file that cannot be read at all gives one row (0, problem)."""
    try:
        if path.suffix.lower() == ".jsonl":
            with open(path, encoding="utf-8-sig") as f:
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            yield n, _object(json.loads(line))
                        except json.JSONDecodeError as e:
                            yield n, f"not valid JSON ({e.msg} at column {e.colno})"
            return
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        yield 0, f"not UTF-8 text ({e.reason} at byte {e.start})"
        return
    except json.JSONDecodeError as e:
        yield 0, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        return
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        data = [row for v in data.values() for row in v]  # LLaVA-Med figure captions: domain -> list
    if not isinstance(data, list):
        yield 0, "expected a JSON list of figures (or JSON Lines, one figure per line)"
        return
    for n, row in enumerate(data, start=1):
        yield n, _object(row)


def _object(row: Any) -> dict[str, Any] | str:
    return row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def detect_layout(row: dict[str, Any]) -> str:
    """The layout a (first) row is written in."""
    if "conversations" in row or "fig_caption" in row or "pair_id" in row:
        return "llava_med"
    if "images" in row or "mentions" in row:
        return "medvl"
    if "image" in row and "caption" in row:
        if "alignment_type" in row or _PMC_NAME.match(str(row["image"])):
            return "pmc_oa"
        return "medvl"
    raise RowError(f"cannot tell the layout from the keys {sorted(row)}; expected medvl (images, caption), "
                   f"llava_med (pair_id, fig_caption / image, conversations) or pmc_oa (image, caption); "
                   f"or set options.layout")


def _text(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if not isinstance(v, str) or not v.strip():
        raise RowError(f"{key!r} must be a non-empty string, got {v!r}"[:200])
    return v.strip()


def _opt_id(row: dict[str, Any], key: str) -> str | None:
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise RowError(f"{key!r} must be a string, got {type(v).__name__}")
    return str(v).strip()


def _mentions(row: dict[str, Any], key: str) -> list[str]:
    v = row.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise RowError(f"{key!r} must be a list of sentences, got {type(v).__name__}")
    out = []
    for m in v:
        if isinstance(m, dict):  # LLaVA-Med: {"tokens": sentence}
            m = m.get("tokens")
        if not isinstance(m, str):
            raise RowError(f"{key!r} must hold sentences (strings), got {type(m).__name__}")
        if m.strip():
            out.append(" ".join(m.split()))
    return out


def parse_row(row: dict[str, Any], layout: str) -> dict[str, Any]:
    """One row -> {images, caption, mentions, pmcid, pmid, figure_id}; RowError when it does not fit."""
    if layout == "medvl":
        imgs = row.get("images", row.get("image"))
        imgs = [imgs] if isinstance(imgs, str) else imgs
        if not isinstance(imgs, list) or not imgs or not all(isinstance(x, str) and x.strip() for x in imgs):
            raise RowError(f"'images' must be a non-empty list of paths (or 'image' one path), got {imgs!r}"[:200])
        return {"images": [x.strip() for x in imgs], "caption": _text(row, "caption"),
                "mentions": _mentions(row, "mentions"), "pmcid": _opt_id(row, "pmcid"), "pmid": _opt_id(row, "pmid"),
                "figure_id": _opt_id(row, "figure_id")}
    if layout == "pmc_oa":
        image = _text(row, "image")
        m = _PMC_NAME.match(Path(image).name)
        return {"images": [image], "caption": _text(row, "caption"), "mentions": [],
                "pmcid": m.group(1) if m else None, "pmid": None, "figure_id": m.group(2) if m else None}
    if "conversations" in row:  # LLaVA-Med conversation form
        turns = row["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise RowError("'conversations' must be a list of {from, value} turns")
        answers = [t.get("value") for t in turns if t.get("from") == "gpt"]
        if len(answers) > 1:  # llava_med_instruct_*.json: GPT-4 Q&A about the figure, its caption is elsewhere
            raise RowError(f"a conversation of {len(answers)} answers is instruction data, not a caption (read "
                           f"llava_med_instruct_fig_captions.json for the captions and inline mentions)")
        if not answers or not isinstance(answers[0], str) or not answers[0].strip():
            raise RowError("no 'gpt' turn with the caption in 'conversations'")
        paper, _, fig = (_opt_id(row, "id") or "").partition("_")
        return {"images": [_text(row, "image")], "caption": answers[0].strip(), "mentions": [],
                "pmcid": paper if re.fullmatch(r"PMC\d+", paper) and fig else None,
                "pmid": paper if paper.isdigit() and fig else None, "figure_id": fig or None}
    pair = _text(row, "pair_id")
    pmid = _opt_id(row, "pmid")
    return {"images": [f"{pair}.jpg"], "caption": _text(row, "fig_caption"),
            "mentions": _mentions(row, "in_text_mention"), "pmcid": _opt_id(row, "pmcid"), "pmid": pmid,
            "figure_id": _opt_id(row, "fig_id")}


# modality named by a caption -----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _modality_terms() -> tuple[Any, dict[str, str]]:
    from medvl.curate.medterms import MedicalVocabulary
    from medvl.taxonomy import vocabulary

    spelled: dict[str, str] = {}
    for e in vocabulary("modality"):
        for s in [e["key"], e["en"], *e["synonyms"]]:
            if s.isascii() and (len(s) >= 3 or s == e["key"]):
                spelled.setdefault(s.lower(), e["key"])
    return MedicalVocabulary(spelled), spelled


def caption_modality(caption: str) -> str | None:
    """The modality a caption names most often (ties: the one named first), or None."""
    voc, spelled = _modality_terms()
    hits = [spelled[t] for t in voc.matches(caption)]
    if not hits:
        return None
    counts = Counter(hits)
    return max(counts, key=lambda k: (counts[k], -hits.index(k)))
