"""The read stage's config: one recipe ``sources[i]`` entry (SourceConfig with its WindowSpec and
SlicingPolicy) and the ``image`` block (ImageConfig: how record images are written).

Validators import the source registry and the taxonomy lazily, so this module imports nothing of a stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from medvl.core.config import StrictModel
from medvl.core.patterns import one_group_pattern


class WindowSpec(StrictModel):
    level: float
    width: float = Field(gt=0)


class SlicingPolicy(StrictModel):
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


class SourceConfig(StrictModel):
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


class ImageConfig(StrictModel):
    max_side: int = Field(512, ge=32, description="longest side of written images (downscaled only)")
    min_side: int = Field(32, ge=1, description="images smaller than this are rejected")
    png_compress_level: int = Field(
        1, ge=0, le=9,
        description="PNG compression of the written record images: 0 = stored rows; 1-3 = rows Up-filtered and "
                    "deflated by libdeflate at that level (medvl's own encoder, level 1 ~14x faster than Pillow's "
                    "level 6 for ~7% more bytes on real medical images, README table); 4-9 = Pillow's encoder (adaptive "
                    "row filters, zlib at that level; 9 = smallest). Part of the recipe because it changes the "
                    "image bytes, hence their content-addressed names. Label maps have their own fixed setting.")
