"""What a source is: a registered class that enumerates cheap work units (files, volumes, rows) and turns
one unit into 2D items or rejects. Units are picklable so a process pool can load them in parallel.

A source whose enumeration must read every file (DICOM: headers decide which files form a series) can split
it into an index phase that runs in workers: ``index_tasks`` (cheap, lazy, picklable batches),
``index_task`` (one batch -> picklable summaries, run by :func:`run_index_task` in a worker that has only the
source config) and ``units_from_index`` (summaries in task order -> the units). ``units()`` of such a source
is ``units_from_index(map(index_task, index_tasks()))``: the same units and rejects in the same order.

Adding a dataset format = one new file in ``medvl/sources/`` with ``@SOURCES.register("name")``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict

from medvl.core.records import Region, Reject
from medvl.core.registry import Registry

if TYPE_CHECKING:
    from medvl.sources.config import SourceConfig


@dataclass
class Unit:
    """One cheap-to-enumerate piece of work: usually one file, one volume/case, or one image with its rows."""

    key: str  # path relative to the source root (what rejects and provenance name)
    payload: dict[str, Any] = field(default_factory=dict)  # picklable, format-specific


@dataclass
class Item:
    """One 2D image produced by a source, before it is written. ``array`` is uint8, (H, W) or (H, W, 3),
    already windowed/normalized and resampled to square pixels; ``regions`` are in its pixel coordinates."""

    array: np.ndarray
    source_file: str  # relative to the source root
    patient_raw: str | None = None  # raw patient id from the data (hashed by the pipeline, never stored)
    labels: list[str] = field(default_factory=list)  # raw labels (normalized later by the taxonomy)
    regions: list[Region] = field(default_factory=list)
    modality: str | None = None  # when the data says it (DICOM Modality, dataset.json); else recipe's
    body_region: str | None = None
    view: str | None = None
    window: str | None = None
    slice: dict[str, Any] | None = None
    dimension: str = "2d"
    task: str | None = None  # "cls" / "det" / "seg"; defaults to the source's
    extra: dict[str, Any] = field(default_factory=dict)  # non-identifying metadata only
    mask: np.ndarray | None = None  # optional integer label map aligned with ``array`` (segmentation sources)
    # mask value -> label name; a value where segments overlap maps to the list of every label present there
    mask_values: dict[int, str | list[str]] = field(default_factory=dict)
    sensitive: set[str] = field(default_factory=set)  # identifying values seen in the file: scrubbed from outputs
    # further images of a multi-image item (a figure's panels), uint8 like ``array``; None = a one-image item. A list
    # (even empty) makes the read stage write them like ``array`` and list every image's path and size in the
    # record's ``extra["images"]`` / ``extra["image_sizes"]`` (first entry = the record's own image)
    more_arrays: list[np.ndarray] | None = None


class SourceOptions(BaseModel):
    """Format-specific options; each source subclasses this. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Source:
    """Base class. Subclasses set ``task`` and ``Options`` and implement ``units`` and ``load``."""

    registry_name: ClassVar[str] = ""
    task: ClassVar[str] = "cls"
    Options: ClassVar[type[SourceOptions]] = SourceOptions

    def __init__(self, cfg: SourceConfig, root: Path | None = None):
        self.cfg = cfg
        self.root = Path(root) if root is not None else Path(cfg.path)
        self.opts = self.Options.model_validate(cfg.options or {})
        # identifying values seen while enumerating (e.g. DICOM headers): rejects are scrubbed of them too
        self.sensitive: set[str] = set()
        # what the user should know about how the source was read (e.g. "12 test volumes in imagesTs were not
        # read; set options.include_test"); collected while enumerating, shown in summary.json and the card
        self.notes: list[str] = []

    def labels_exhaustive(self) -> bool:
        """Whether a record's labels are all the dataset's labels that apply (so a missing label means
        "absent"). True for single-label classification formats; the recipe's ``exhaustive_labels`` wins."""
        return False

    def units(self) -> Iterator[Unit | Reject]:
        """Enumerate work units (cheap: no pixel decoding). May yield rejects (e.g. a CSV row whose path
        escapes the dataset folder)."""
        raise NotImplementedError

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        """Decode one unit into 2D items; a problem with the unit yields a Reject, never raises."""
        raise NotImplementedError

    # optional index phase (see the module docstring) -------------------------------------------------
    def index_tasks(self) -> Iterator[Any] | None:
        """Lazy, picklable tasks of the index phase (e.g. batches of file paths from a sorted walk), or None:
        the source has no index phase and ``units()`` is cheap enough to run where the build runs."""
        return None

    def index_task(self, task: Any) -> Any:
        """Run one index task (in a worker, on a source rebuilt from its config alone): a picklable result.
        A problem with one file becomes part of the result (a reject), never an exception."""
        raise NotImplementedError

    def units_from_index(self, results: Iterable[Any]) -> Iterator[Unit | Reject]:
        """The units and rejects from every index result, given in task order (as ``units()`` gives them);
        identifying values the results carry are added to ``self.sensitive``."""
        raise NotImplementedError

    def protected_terms(self) -> list[str]:
        """The recipe's label vocabulary for this source (``label_map`` and ``label_synonyms`` keys and values, a
        fixed ``options.label``): words the privacy scrubber must never treat as identifying."""
        terms = [*self.cfg.label_map, *self.cfg.label_map.values(), *self.cfg.label_synonyms,
                 *self.cfg.label_synonyms.values()]
        label = getattr(self.opts, "label", None)
        if isinstance(label, str):
            terms.append(label)
        return [str(t) for t in terms]

    # helpers -------------------------------------------------------------------------------------
    def reject(self, item: str, reason: str, stage: str = "read") -> Reject:
        return Reject(source=self.cfg.name, item=item, reason=reason, stage=stage)

    def rel(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def inside_root(self, path: Path) -> bool:
        try:
            Path(path).resolve().relative_to(self.root.resolve())
            return True
        except ValueError:
            return False


SOURCES: Registry[type[Source]] = Registry("source format", "medvl.sources")

_INDEX_SOURCES: dict[str, Source] = {}  # per worker process: one source per config, reused across tasks


def run_index_task(job: tuple[dict[str, Any], Any]) -> Any:
    """Top-level (picklable) worker entry of the index phase: ``job`` = (source config as
    ``SourceConfig.model_dump(mode="json")``, one task from ``index_tasks()``) -> ``index_task(task)``."""
    import json

    from medvl.sources.config import SourceConfig

    cfg_dict, task = job
    key = json.dumps(cfg_dict, sort_keys=True)
    src = _INDEX_SOURCES.get(key)
    if src is None:
        cfg = SourceConfig.model_validate(cfg_dict)
        src = _INDEX_SOURCES[key] = SOURCES.get(cfg.format)(cfg)
    return src.index_task(task)
