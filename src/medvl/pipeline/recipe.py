"""The YAML recipe: sources, generation, curation and exports, validated up front.

Errors name the key and the allowed values, e.g.
``sources[2].format: 'nifti_folder' is not a source format; allowed: coco, csv_boxes, ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from medvl.core.patterns import one_group_pattern

KIND_NAMES = ("caption", "region_caption", "perception_qa", "instruction_qa", "conversation")
EXPORT_NAMES = ("llava", "messages", "parquet", "mixture", "card")


class RecipeError(ValueError):
    """A recipe problem, with the file and key in the message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowSpec(_Strict):
    level: float
    width: float = Field(gt=0)


class SlicingPolicy(_Strict):
    """3D -> 2D: per label, the ``per_label`` slices with the largest mask area on each axis in ``axes``
    (at least ``min_area`` mask pixels, measured on the resampled slice), plus ``unlabelled`` evenly spaced
    slices without any label in each labelled volume; slices are resampled to square pixels using the voxel
    spacing. Volumes without labels (Decathlon test images, unlabelled DICOM series) take their own count
    (``test_slices`` / ``slices_per_series`` of the source's options), never ``unlabelled``.

    ``axes`` unset (None) means: DICOM series in their acquisition plane (from ImageOrientationPatient),
    NIfTI volumes axial. An axis whose slices would be stretched by more than ``max_spacing_ratio``
    (coarser over finer in-plane spacing, e.g. 53 mm slices under 0.7 mm pixels = 76) is skipped and
    reported as a "filter" reject naming the file, the axis and the ratio."""

    axes: list[Literal["axial", "coronal", "sagittal"]] | None = Field(
        None, min_length=1, description="axes to slice; unset: a DICOM series' acquisition plane, axial for NIfTI "
        "volumes")
    per_label: int = Field(3, ge=1)
    min_area: int = Field(64, ge=1)
    unlabelled: int = Field(0, ge=0, description="evenly spaced slices without any label, per labelled volume "
                            "and axis")
    min_gap: int = Field(2, ge=0, description="minimum distance in slices between two picks of one label")
    max_spacing_ratio: float = Field(4.0, ge=1.0, description="skip an axis whose slices' coarser in-plane "
                                     "spacing exceeds this many times the finer one (streaks, not images)")

    def axes_or(self, default: str) -> list[str]:
        """The recipe's axes, or ``[default]`` when the recipe names none."""
        return list(self.axes) if self.axes else [default]


class SourceConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    format: str
    path: str
    modality: str | None = None
    department: str | None = None
    body_region: str | None = None
    clinical_task: str | None = None
    task: Literal["cls", "det", "seg"] | None = None
    label_map: dict[str, str] = {}
    label_synonyms: dict[str, str] = {}
    window: str | WindowSpec | None = None  # CT preset name, {level, width}, "percentile" or "native"
    slicing: SlicingPolicy = SlicingPolicy()
    max_items: int | None = Field(None, ge=1)
    licence: str | None = None
    patient_namespace: str | None = Field(None, description="sources of one cohort share it so a patient id "
                                          "means the same patient in each (default: the source name)")
    patient_pattern: str | None = Field(None, description="regex with one group taking a patient/case id from "
                                        "the file path when the data carries none (e.g. '^(\\d+)_')")
    split_unit: Literal["patient", "image"] = Field(
        "patient", description="what the train/val/test split keeps together: 'patient' (the data's patient id, "
        "else patient_pattern, else the file or volume) or 'image' (every image alone: slices and tiles of one "
        "subject may land in different splits; only for data where that is intended, e.g. a one-subject demo)")
    exhaustive_labels: bool | None = Field(None, description="every record lists all labels of the dataset that "
                                           "apply, so an absent label means 'not present' (default: true for "
                                           "single-label classification sources)")
    count_labels: Literal["auto", "none"] | list[str] = Field(
        "auto", description="labels whose annotated regions are separate instances, so generated text may count "
        "them ('3 annotated regions labelled nodule'): 'auto' = labels naming a countable finding or object "
        "(lesion, nodule, polyp, cell, mass, tumour, ...; medvl/generate/templates/label_semantics.yaml), 'none' "
        "= never count, or a list of labels (normalized like the data's labels)")
    options: dict[str, Any] = {}

    @field_validator("patient_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        return one_group_pattern(v)

    @field_validator("count_labels", mode="before")
    @classmethod
    def _count_labels(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.lower() not in ("auto", "none"):
                raise ValueError(f"{v!r} is not allowed; expected 'auto', 'none' or a list of labels")
            return v.lower()
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise ValueError(f"expected 'auto', 'none' or a list of non-empty label names, got {v!r}")
        return v

    @field_validator("label_synonyms")
    @classmethod
    def _synonyms(cls, v: dict[str, str]) -> dict[str, str]:
        from medvl.taxonomy import synonym_table

        synonym_table(v)  # raises naming the keys: empty key/target, two spellings of one key with two targets
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from medvl.sources import SOURCES

        if v not in SOURCES:
            raise ValueError(f"{v!r} is not a source format; allowed: {', '.join(SOURCES.names())}")
        return v

    @field_validator("modality")
    @classmethod
    def _known_modality(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from medvl.taxonomy import MODALITIES, normalize_modality

        canon = normalize_modality(v)
        if canon is None:
            raise ValueError(f"{v!r} is not a known modality; allowed: {', '.join(MODALITIES)}")
        return canon

    @field_validator("department")
    @classmethod
    def _known_department(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from medvl.taxonomy import DEPARTMENTS, normalize_department

        canon = normalize_department(v)
        if canon is None:
            raise ValueError(f"{v!r} is not a department; allowed: {'; '.join(DEPARTMENTS)}")
        return canon

    @field_validator("clinical_task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from medvl.taxonomy import CLINICAL_TASKS, normalize_clinical_task

        canon = normalize_clinical_task(v)
        if canon is None:
            raise ValueError(f"{v!r} is not a clinical task; allowed: {'; '.join(CLINICAL_TASKS)}")
        return canon

    @field_validator("window")
    @classmethod
    def _known_window(cls, v: Any) -> Any:
        if isinstance(v, str):
            from medvl.imaging.window import WINDOW_PRESETS

            allowed = [*WINDOW_PRESETS, "percentile", "native"]
            if v.lower() not in allowed:
                raise ValueError(f"{v!r} is not a window; allowed: {', '.join(allowed)} or {{level, width}}")
            return v.lower()
        return v

    @model_validator(mode="after")
    def _format_options(self) -> "SourceConfig":
        from medvl.sources import SOURCES

        cls_ = SOURCES.get(self.format)
        try:
            cls_.Options.model_validate(self.options or {})
        except ValidationError as e:
            allowed = ", ".join(cls_.Options.model_fields) or "(none)"
            msgs = "; ".join(f"options.{'.'.join(map(str, er['loc']))}: {er['msg'].removeprefix('Value error, ')}"
                             for er in e.errors())
            raise ValueError(f"format {self.format!r}: {msgs} (options of {self.format}: {allowed})") from None
        return self

    @model_validator(mode="after")
    def _one_modality_source(self) -> "SourceConfig":
        """``modality`` wins over what the data says for every item, so a per-item modality option of the
        format (``modality_options`` of its Options, e.g. image_folder ``class_modality``) would be ignored."""
        from medvl.sources import SOURCES

        names = getattr(SOURCES.get(self.format).Options, "modality_options", ())
        used = [k for k in names if (self.options or {}).get(k)]
        if self.modality is not None and used:
            raise ValueError(f"`modality` ({self.modality!r}) and options.{used[0]} are both set; the recipe's "
                             f"modality wins for every item, so options.{used[0]} would be ignored: drop one")
        return self


class GenerationConfig(_Strict):
    generator: str = "template"
    kinds: dict[str, int] = {"caption": 1, "region_caption": 1, "perception_qa": 2, "instruction_qa": 1,
                             "conversation": 1}
    languages: list[Literal["en", "zh"]] = ["en", "zh"]
    zh_share: float = Field(0.3, ge=0.0, le=1.0)
    label_zh: dict[str, str] = {}  # label -> Chinese name, used before the built-in glossary
    options: dict[str, Any] = {}

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in KIND_NAMES:
                raise ValueError(f"{k!r} is not a sample kind; allowed: {', '.join(KIND_NAMES)}")
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"kinds.{k}: expected a count >= 0, got {n!r}")
        return v


class CurationConfig(_Strict):
    splits: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    dedup: bool = True
    near_duplicates: Literal["group", "report", "off"] = Field(
        "group", description="near-identical images of different patients (pHash or dHash within the audit's "
        "thresholds): 'group' keeps them in one split, 'report' only lists those that straddle splits")
    near_duplicate_max_group: int = Field(50, ge=2, description="largest group (in records) that near-duplicate "
                                          "links may build; links that would exceed it are reported instead")
    exclude_md5: list[str] = []  # image MD5s to drop (e.g. from `medvl audit`)
    exclude_file: str | None = None  # a file with one MD5 per line, or an audit overlaps JSON

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {v}")
        return v


class ImageConfig(_Strict):
    max_side: int = Field(512, ge=32, description="longest side of written images (downscaled only)")
    min_side: int = Field(32, ge=1, description="images smaller than this are rejected")


class Recipe(_Strict):
    name: str = "medvl-corpus"
    seed: int = 0
    root: str | None = Field(None, description="folder that relative source paths start from, and that paths "
                             "written to outputs are relative to (default: the recipe file's folder)")
    salt: str | None = Field(None, description="secret for the salted patient keys; required by `medvl build` "
                             "(without it keys of guessable ids could be reversed)")
    workers: int = Field(1, ge=1)
    sources: list[SourceConfig]
    generation: GenerationConfig = GenerationConfig()
    curation: CurationConfig = CurationConfig()
    image: ImageConfig = ImageConfig()
    exports: list[str] = list(EXPORT_NAMES)
    export_options: dict[str, dict[str, Any]] = {}  # per export, e.g. {parquet: {rows_per_shard: 5000},
    #                                                 mixture: {ratios: {kvasir: 0.5}}}
    _root: Path | None = PrivateAttr(default=None)  # resolved `root` (or the recipe's folder)
    _given: dict[str, str] = PrivateAttr(default_factory=dict)  # absolute path -> the spelling the recipe used

    def portable_path(self, path: str | None) -> str | None:
        """How a local path is written to outputs: relative to the root when inside it; else as the recipe
        spelled it when that was relative; else only its last component (an absolute path names folders of
        this machine, which may name people)."""
        if path is None:
            return None
        p = Path(path)
        if self._root is not None and p.is_absolute():
            try:
                return p.resolve().relative_to(self._root).as_posix() or "."
            except ValueError:
                pass
        given = self._given.get(str(p), str(path))
        if not Path(given).is_absolute():
            return Path(given).as_posix()
        return f"<outside the recipe root>/{p.name}"

    @field_validator("exports")
    @classmethod
    def _known_exports(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in EXPORT_NAMES:
                raise ValueError(f"{e!r} is not an export; allowed: {', '.join(EXPORT_NAMES)}")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> "Recipe":
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice")
            seen.add(s.name)
        return self


def _format_errors(e: ValidationError) -> str:
    lines = []
    for er in e.errors():
        loc = ""
        for part in er["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (("." if loc else "") + str(part))
        msg = er["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc or '(top)'}: {msg}")
    return "\n".join(lines)


def parse_recipe(data: dict[str, Any], origin: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    """Validate a recipe dict; relative source paths are resolved against ``base_dir``."""
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{origin}: invalid recipe\n{_format_errors(e)}") from None
    root = None
    if recipe.root is not None:
        root = Path(recipe.root)
        if not root.is_absolute():
            root = (base_dir or Path.cwd()) / root
    elif base_dir is not None:
        root = base_dir
    if root is not None:
        recipe._root = root.resolve()
        for s in recipe.sources:
            p = Path(s.path)
            if not p.is_absolute():
                s.path = str((recipe._root / p).resolve())
                recipe._given[s.path] = p.as_posix()
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"{path}: cannot read recipe ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    return parse_recipe(data, origin=str(path), base_dir=path.parent.resolve())
