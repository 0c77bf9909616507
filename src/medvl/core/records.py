"""The two records that carry everything: ``ImageRecord`` (one 2D training image and what is known about
it) and ``Sample`` (one training/test item about one or more records). Exports, statistics, benchmarks
and training datasets are views of these. Plus ``Reject``: an input item that was dropped, and why."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

Box = tuple[float, float, float, float]  # pixel x1, y1, x2, y2 in the record image (x2/y2 exclusive)


_SCALARS = (str, int, float, bool, type(None))


def _plain(v: Any) -> Any:
    """What ``dataclasses.asdict`` makes of a field value (dicts, lists and tuples copied, nested dataclasses
    turned into dicts), without its generic recursion: records are turned into dicts millions of times."""
    t = type(v)
    if t in _SCALARS:
        return v
    if t is dict:
        return {k: _plain(x) for k, x in v.items()}
    if t is list:
        return [_plain(x) for x in v]
    if t is tuple:
        return tuple(_plain(x) for x in v)
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    return copy.deepcopy(v)


@dataclass
class Region:
    """A labelled region of a record image: a box in pixel coordinates, optionally from a mask."""

    label: str
    box: Box
    area: int | None = None  # mask pixels (None for boxes that came as boxes)
    source: str = "box"  # "box" (annotated box) or "mask" (derived from a segmentation mask)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": [float(v) for v in self.box], "area": self.area, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Region":
        return cls(label=d["label"], box=tuple(d["box"]), area=d.get("area"), source=d.get("source", "box"))


@dataclass
class ImageRecord:
    """One 2D image ready for training (written once under ``images/``, named by content hash)."""

    image: str  # path relative to the output folder, e.g. "images/3f/3fa2...png"
    sha256: str  # content hash of the written PNG bytes
    width: int
    height: int
    modality: str  # canonical taxonomy key, e.g. "CT", "MR", "X-ray", "endoscopy"
    dataset: str  # source name from the recipe
    source_format: str  # registered source name, e.g. "image_folder", "decathlon", "dicom"
    task: str  # source task: "cls", "det", "seg"
    dimension: str  # "2d" or "3d" (3d = sliced from a volume)
    source_file: str  # path relative to the source root (scrubbed of identifying values)
    patient_key: str  # salted hash of patient id, or of the source file/volume when there is none
    labels: list[str] = field(default_factory=list)  # image-level labels (normalized)
    regions: list[Region] = field(default_factory=list)
    department: str | None = None  # one of the 18 GMAI-MMBench departments
    body_region: str | None = None
    clinical_task: str | None = None  # one of the 18 GMAI-MMBench clinical VQA tasks
    slice: dict[str, Any] | None = None  # {"axis": "axial", "index": 42, "of": 155} for volume slices, {"frame": 3} for frames
    split: str | None = None  # "train" / "val" / "test" after curation
    licence: str | None = None
    view: str | None = None  # e.g. "axial", "PA" when the data says so
    window: str | None = None  # CT window preset used, or "percentile" / "native"
    mask: str | None = None  # label-map PNG aligned with the image ("masks/.."), for segmentation sources
    # str(pixel value in mask) -> label; where segments overlap, the value of the overlap holds the sorted list
    # of every label present there (use :meth:`mask_values_for` to get all values of one label)
    mask_values: dict[str, str | list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # fingerprints that survive build settings (for exclusions and near-duplicate checks)
    source_md5: str | None = None  # MD5 of the source file's bytes (None for volumes read from a folder)
    pixel_md5: str | None = None  # MD5 of the source image's canonical RGB pixels before resizing
    phash: str | None = None  # perceptual hashes (imagehash, 16 hex digits) of the written image; None if flat
    dhash: str | None = None

    @property
    def id(self) -> str:
        """Provenance id ``dimension#task#modality#dataset#dirs...#label#file[@slice]`` (GMAI-VL style).

        Computed once and kept; assigning any field the id is made of (labels, regions, source file, ...)
        forgets it, so the next access recomputes it. Lists changed in place must be re-assigned
        (``rec.regions = rec.regions + [r]``)."""
        cached = self.__dict__.get("_id")
        if cached is None:
            from medvl.core.ids import record_id

            cached = self.__dict__["_id"] = record_id(self)
        return cached

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ID_FIELDS:
            self.__dict__.pop("_id", None)
        object.__setattr__(self, name, value)

    def mask_values_for(self, label: str) -> list[int]:
        """Every label-map value whose pixels show ``label`` (its own value and the overlaps it is part of)."""
        out = []
        for k, v in self.mask_values.items():
            if v == label or (isinstance(v, list) and label in v):
                out.append(int(k))
        return sorted(out)

    def to_dict(self, with_id: bool = True) -> dict[str, Any]:
        d = {name: _plain(getattr(self, name)) for name in _RECORD_FIELDS}  # asdict's keys, in its order
        d["regions"] = [r.to_dict() for r in self.regions]
        if with_id:
            d["id"] = self.id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageRecord":
        """A record from :meth:`to_dict` output; a stored ``id`` is kept (ids are assigned once and stored)."""
        d = dict(d)
        rid = d.pop("id", None)
        d["regions"] = [Region.from_dict(r) for r in d.get("regions", [])]
        rec = cls(**d)
        if rid is not None:
            rec.__dict__["_id"] = rid
        return rec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)


_RECORD_FIELDS = tuple(f.name for f in fields(ImageRecord))
# the fields :func:`medvl.core.ids.record_id` reads: assigning one forgets the cached id
_ID_FIELDS = frozenset({"source_file", "labels", "regions", "dimension", "task", "modality", "dataset", "slice"})


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


KINDS = ("caption", "region_caption", "perception_qa", "instruction_qa", "conversation", "text")


@dataclass
class Sample:
    """One training/test item: image references, turns, kind, language and provenance."""

    id: str  # record id + "#kind#lang#n"
    images: list[str]  # image paths relative to the output folder ("images/..")
    turns: list[Turn]
    kind: str  # one of KINDS
    lang: str  # "en" or "zh"
    record_id: str | None = None
    generator: str = "template"  # "template" or "llm:<model>"
    template_id: str | None = None  # template ids used, or model + prompt hash
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # modality, department, dataset, ... copied for views

    def to_dict(self) -> dict[str, Any]:
        # asdict's keys, in its order; the turns by their own to_dict (not asdict's generic recursion)
        return {name: [t.to_dict() for t in self.turns] if name == "turns" else _plain(getattr(self, name))
                for name in _SAMPLE_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        d = dict(d)
        d["turns"] = [Turn(**t) for t in d["turns"]]
        return cls(**d)


_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))


@dataclass
class Reject:
    """An input item that did not make it, with the reason. Every rejected item is listed."""

    source: str  # source name from the recipe
    item: str  # file path relative to the source root (plus "@slice" / "#row" when finer than a file)
    reason: str  # human-readable: names the file and the problem
    stage: str = "read"  # "read", "validate", "dedup", "filter", "audit", ...

    def to_dict(self) -> dict[str, str]:
        return asdict(self)
