"""A folder of DICOM files (any nesting): single images, multi-frame files, series and DICOM SEG.

``mode: auto`` groups files by SeriesInstanceUID; a series of >= 2 single-frame slices with consistent
geometry becomes a volume (ordered by ImagePositionPatient along the slice normal, never by file name),
reoriented to RAS and sliced with the recipe's slicing policy (unless ``slicing.axes`` is set: in the
plane the series was acquired in, from ImageOrientationPatient; axes whose slices would be stretched more
than ``slicing.max_spacing_ratio`` are skipped with a "filter" reject); other files are single images, and
multi-frame files give ``frames`` frames (``all``, ``middle`` or N evenly spaced; default 5). Unlabelled
series give ``slices_per_series`` slices per axis; ``slicing.unlabelled`` is for series with a SEG.
``mode: files`` treats every file alone; ``mode: series`` keeps only volumes (and multi-frame files).

With ``seg: true`` DICOM SEG files are matched to their source images by SOPInstanceUID; their segments
become regions (task "seg"). Several SEGs on one image and overlapping segments stay distinct: the label
map gets one value per label and one per overlap combination (``mask_values`` maps it to the sorted list
of labels present), and each label's boxes come from its own full mask. A SEG whose referenced images are
not in the folder is rejected; SEG files are never rendered as images. Classification labels come from
``label_from`` (a header field or the parent folder name) and/or a fixed ``label``.

Pixels: a file without PixelSpacing keeps its pixel grid (or its PixelAspectRatio) and records
``extra.spacing = null`` with ``spacing_known: false``; frames or slices with more than 1% NaN/Inf pixels
are rejected naming the counts, the few non-finite pixels of the others are shown as the lowest value.

Privacy: identifying header values go only to ``Item.sensitive``; ``patient_raw`` is the PatientID (the
pipeline hashes it). Only StudyDescription / SeriesDescription / BodyPartExamined are copied to ``extra``,
and dropped when they contain an identifying value. Volume units are keyed by their folder (plus
``/series-NN`` when several series share a folder)."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from medvl.core.records import Reject
from medvl.imaging.boxes import mask_to_regions, present_values
from medvl.imaging.labelmap import OverlapLabelMap, labels_of, values_of
from medvl.imaging.slicing import (AXES, AXIS_NAMES, BadVoxels, coarse_axis_reason, even_indices, extract_slice,
                                   group_picks, resample_square, select_slices, split_axes)
from medvl.imaging.window import resolve_window
from medvl.io.dicom import (DICOMDIR_SOP_CLASS, DicomImage, DicomReadError, SliceGeometry, acquisition_axis,
                            apply_canonical, identifying_values,
                            order_series, read_dataset, read_dicom, read_seg, seg_references, series_affine,
                            series_problem, slice_geometry, to_canonical)
from medvl.core.privacy import Scrubber
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

LabelField = Literal["none", "StudyDescription", "SeriesDescription", "BodyPartExamined", "folder"]


class DicomOptions(SourceOptions):
    """Options of the ``dicom`` source."""

    mode: Literal["auto", "files", "series"] = Field(
        "auto", description="auto: stackable series become volumes, the rest single images; files: every file "
        "alone; series: volumes (and multi-frame files) only")
    frames: Literal["all", "middle"] | int = Field(5, description="frames of multi-frame files: all, middle or N")
    seg: bool = Field(True, description="read DICOM SEG files and match them to their images by SOP Instance UID")
    label_from: LabelField = Field("none", description="image label from a header field or the parent folder name "
                                   "(used only when it contains no identifying value)")
    label: str | None = Field(None, description="a fixed label for every image of the source")
    slices_per_series: int = Field(5, ge=1, description="evenly spaced slices per axis of a series without SEG "
                                   "(the only count for them; slicing.unlabelled applies to series with a SEG)")
    min_region_size: int = Field(16, ge=1, description="smallest SEG region (pixels) that becomes a box")
    per_component: bool = Field(True, description="one box per connected component (false: one box per label)")
    use_file_window: bool = Field(True, description="non-CT: use the file's WindowCenter/Width if no window")
    burned_in: Literal["crop_or_reject", "reject", "keep"] = Field(
        "crop_or_reject", description="images that may carry burned-in text (BurnedInAnnotation YES, or absent on "
        "US/SC/OT/XC/ES): crop to the ultrasound tissue region when the file defines one, else reject; "
        "'keep' only after checking the pixels yourself")


def _frame_indices(n: int, frames: str | int) -> list[int]:
    if frames == "all" or n == 1:
        return list(range(n))
    if frames == "middle":
        return [n // 2]
    k = int(frames)
    if k >= n:
        return list(range(n))
    return sorted({int(np.floor(p + 0.5)) for p in np.linspace(0, n - 1, k)})


def _contains_sensitive(text: str, scrub: Scrubber) -> bool:
    """True when the text holds any identifying value in any spelling the scrubber knows (a date as
    01/19/2004, a name as Doe_John, a short patient number anywhere): such free text is not used as a label
    or copied into metadata."""
    return scrub.contains(text, strict=True)


@dataclass
class SegRefs:
    """A DICOM SEG found by the index phase: its path and the SOPInstanceUIDs it references."""

    rel: str
    refs: list[str]


@dataclass
class DicomIndex:
    """The result of one index task: per file in walk order a ``SliceGeometry`` (an image), a ``SegRefs`` or
    a ``Reject``; and the identifying values of every header read (picklable: it travels back from a worker)."""

    entries: list[SliceGeometry | SegRefs | Reject] = field(default_factory=list)
    sensitive: set[str] = field(default_factory=set)


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, str | None]]:
    """Files under ``folder`` as (path relative to the root as listed, None), in the order of
    ``sorted(root.rglob("*"))`` (each folder's entries sorted by name, a folder's files right after its
    name), without listing more than the folder being walked. Hidden entries are skipped and symlinked
    folders not followed; a folder that cannot be listed is (its path, the problem)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        if prefix:  # the root itself: no folder, no files (enumerate checks that it exists)
            yield prefix.rstrip("/"), f"folder cannot be listed ({e.strerror or type(e).__name__})"
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            is_file, is_dir = e.is_file(), e.is_dir() and not e.is_symlink()
        except OSError:
            continue
        if is_file:
            yield prefix + e.name, None
        elif is_dir:
            yield from _walk(Path(e.path), prefix + e.name + "/")


@SOURCES.register("dicom")
class DicomSource(Source):
    """DICOM folder: images, multi-frame files, series volumes and matched SEG masks."""

    task = "cls"
    Options = DicomOptions
    opts: DicomOptions

    # enumeration: an index phase (headers read in workers), then grouping ---------------------------------
    index_batch: int = 64  # candidate files per index task

    def units(self) -> Iterator[Unit | Reject]:
        yield from self.units_from_index(map(self.index_task, self.index_tasks()))

    def index_tasks(self) -> Iterator[list[tuple[str, str | None]]]:
        """Batches of ``index_batch`` candidate files, as (path relative to the root as listed, None), from a
        lazy walk in sorted path order (hidden files and folders skipped, symlinked folders not followed); a
        folder that cannot be listed is an entry (its path, the problem)."""
        batch: list[tuple[str, str | None]] = []
        for entry in _walk(self.root, ""):
            batch.append(entry)
            if len(batch) >= self.index_batch:
                yield batch
                batch = []
        if batch:
            yield batch

    def index_task(self, task: list[tuple[str, str | None]]) -> DicomIndex:
        """Read the headers of one batch (no pixel data): per file a ``SliceGeometry``, a ``SegRefs`` or a
        reject, and the identifying values of every header read."""
        out = DicomIndex()
        for listed, problem in task:
            if problem is not None:
                out.entries.append(self.reject(listed, f"{listed}: {problem}"))
                continue
            path = self.root / listed
            if not self.inside_root(path):
                out.entries.append(self.reject(listed, f"{listed}: path escapes the dataset folder (symlink)"))
                continue
            rel = self.rel(path)
            try:
                ds = read_dataset(path, header_only=True)
            except DicomReadError as e:
                out.entries.append(self.reject(rel, f"{rel}: {e.problem}"))
                continue
            try:
                out.sensitive |= identifying_values(ds)
                if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
                    out.entries.append(self.reject(rel, f"{rel}: DICOMDIR index file, not an image"))
                    continue
                geom = slice_geometry(ds, rel)
                if geom.is_seg:
                    out.entries.append(SegRefs(rel, seg_references(ds)))
                elif geom.rows < 1 or geom.cols < 1:
                    out.entries.append(self.reject(rel, f"{rel}: DICOM file without an image (no Rows/Columns)"))
                else:
                    out.entries.append(geom)
            except Exception as e:  # noqa: BLE001 - pydicom parses values lazily: a malformed one raises here
                out.entries.append(self.reject(rel, f"{rel}: unreadable DICOM header ({type(e).__name__}: {e})"))
        return out

    def units_from_index(self, results: Iterable[DicomIndex]) -> Iterator[Unit | Reject]:
        """Rejects of unreadable files as they come, then the grouping rejects, SEG rejects and the units
        sorted by key; every header's identifying values go to ``self.sensitive``."""
        images: list[SliceGeometry] = []
        segs: list[SegRefs] = []
        for res in results:
            self.sensitive |= res.sensitive
            for e in res.entries:
                if isinstance(e, Reject):
                    yield e
                elif isinstance(e, SegRefs):
                    segs.append(e)
                else:
                    images.append(e)
        units, rejects = self._group(images)
        yield from rejects
        by_sop = {g.sop_uid: n for n, u in enumerate(units) for g in u.payload["geoms"] if g.sop_uid}
        for seg in segs:
            rel, refs = seg.rel, seg.refs
            if not self.opts.seg:
                yield self.reject(rel, f"{rel}: DICOM SEG ignored (options.seg is false)")
                continue
            hits = sorted({by_sop[r] for r in refs if r in by_sop})
            if not hits:
                yield self.reject(rel, f"{rel}: DICOM SEG: referenced images not found ({len(refs)} referenced "
                                       "image(s), none in the source folder)")
                continue
            for n in hits:
                units[n].payload["segs"].append(rel)
        yield from sorted(units, key=lambda u: u.key)

    def _group(self, images: list[SliceGeometry]) -> tuple[list[Unit], list[Reject]]:
        def file_unit(g: SliceGeometry) -> Unit:
            return Unit(key=g.rel, payload={"kind": "file", "geoms": [g], "segs": []})

        if self.opts.mode == "files":
            return [file_unit(g) for g in images], []
        groups: dict[str, list[SliceGeometry]] = defaultdict(list)
        for g in images:
            groups[g.series_uid or f"file:{g.rel}"].append(g)
        units: list[Unit] = []
        rejects: list[Reject] = []
        volumes: list[list[SliceGeometry]] = []
        for uid in sorted(groups, key=lambda u: min(g.rel for g in groups[u])):
            geoms = groups[uid]
            problem = series_problem(geoms) if len(geoms) >= 2 else "series has only one image"
            if problem is None:
                volumes.append(order_series(geoms))
                continue
            for g in sorted(geoms, key=lambda x: x.rel):
                if self.opts.mode == "series" and g.frames == 1:
                    rejects.append(self.reject(g.rel, f"{g.rel}: not part of a stackable series ({problem})"))
                else:
                    units.append(file_unit(g))
        folder_count: dict[str, int] = defaultdict(int)
        for vol in volumes:
            folder_count[str(PurePosixPath(vol[0].rel).parent)] += 1
        seen: dict[str, int] = defaultdict(int)
        for vol in volumes:
            folder = str(PurePosixPath(vol[0].rel).parent)
            key = folder if folder != "." else "series"
            if folder_count[folder] > 1:
                seen[folder] += 1
                key = f"{key}/series-{seen[folder]:02d}"
            units.append(Unit(key=key, payload={"kind": "volume", "geoms": vol, "segs": []}))
        return units, rejects

    # helpers ----------------------------------------------------------------------------------------------
    def _labels(self, img: DicomImage, rel: str, scrub: Scrubber) -> tuple[list[str], str | None]:
        """Classification labels from ``label_from`` / ``label`` -> (labels, problem)."""
        labels: list[str] = []
        src = self.opts.label_from
        if src != "none":
            value = PurePosixPath(rel).parent.name if src == "folder" else img.text.get(src, "")
            if not value:
                return [], f"{rel}: no label ({src} is empty)"
            if _contains_sensitive(value, scrub):
                return [], f"{rel}: label from {src} contains an identifying value"
            labels.append(self.cfg.label_map.get(value, value))
        if self.opts.label:
            labels.append(self.opts.label)
        return sorted(set(labels)), None

    def _extra(self, img: DicomImage, scrub: Scrubber, **more: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        names = {"StudyDescription": "study_description", "SeriesDescription": "series_description",
                 "BodyPartExamined": "body_part"}
        for k, v in sorted(img.text.items()):
            if k in names and not _contains_sensitive(v, scrub):
                extra[names[k]] = v
        extra.update(more)
        return extra

    def _body(self, img: DicomImage, scrub: Scrubber) -> str | None:
        v = img.text.get("BodyPartExamined")
        return v if v and not _contains_sensitive(v, scrub) else None

    def _read_segs(self, segs: list[str], sops: list[str], shape: tuple[int, int, int], image: str
                   ) -> tuple[np.ndarray | None, dict[int, str | list[str]], set[str], list[Reject]]:
        """Every SEG in ``segs`` on the images ``sops`` (a ``shape`` = (len(sops), H, W) stack) as one label map
        that keeps each segment label distinct, overlaps included (``imaging.labelmap``; a segment is named
        by the recipe's ``label_map`` entry for its SegmentLabel, else for its segment number (which applies to
        that number in every SEG), else by its SegmentLabel as it is). A SEG that cannot
        be decoded or whose masks differ in size from ``image`` is rejected, naming it, and the map is built
        again without it. -> (label map or None, value names, identifying values, rejects)"""
        index = {uid: z for z, uid in enumerate(sops)}
        pending, rejects, sensitive = list(segs), [], set()
        while pending:
            builder = OverlapLabelMap(shape)
            failed: Reject | None = None
            for seg_rel in pending:
                try:
                    sm = read_seg(self.root / seg_rel, sops)
                    sensitive |= sm.sensitive
                    for num, name, per_uid in sm.layers():
                        label = self.cfg.label_map.get(name) or self.cfg.label_map.get(str(num)) or name
                        for uid, m in per_uid.items():
                            if m.shape != shape[1:]:
                                failed = self.reject(seg_rel, f"{seg_rel}: DICOM SEG mask is {m.shape[1]}x{m.shape[0]}"
                                                     f" but its image {image} is {shape[2]}x{shape[1]}", "validate")
                                break
                            builder.add(label, m, at=index[uid])
                        if failed:
                            break
                except DicomReadError as e:
                    failed = self.reject(seg_rel, f"{seg_rel}: {e.problem}")
                if failed:
                    break
            if failed is None:
                lab, names = builder.finish()
                return lab, names, sensitive, rejects
            rejects.append(failed)
            pending.remove(failed.item)
        return None, {}, sensitive, rejects

    def _seg_refs(self, segs: list[str], uids: set[str]) -> tuple[dict[str, set[str]], list[Reject]]:
        """Which of ``uids`` each SEG references (for a series read as single images); a SEG that cannot be
        read or references none of them is rejected."""
        out, rejects = {}, []
        for seg_rel in segs:
            try:
                refs = set(seg_references(read_dataset(self.root / seg_rel, header_only=True))) & uids
            except DicomReadError as e:
                rejects.append(self.reject(seg_rel, f"{seg_rel}: {e.problem}"))
                continue
            if refs:
                out[seg_rel] = refs
            else:
                rejects.append(self.reject(seg_rel, f"{seg_rel}: DICOM SEG: none of its referenced images could be "
                                                    "read"))
        return out, rejects

    @staticmethod
    def _geometry(img: DicomImage) -> tuple[tuple[float, float], dict[str, Any]]:
        """(relative pixel (row, column) size for resampling to square pixels, what ``extra`` says about it).
        Without a pixel spacing the mm size is unknown: ``spacing`` is null and ``spacing_known`` false, and
        the pixel grid is kept as it is (or reshaped by PixelAspectRatio when the file gives one)."""
        if img.spacing is not None:
            return img.spacing, {"spacing": [round(img.spacing[0], 4), round(img.spacing[1], 4)]}
        extra: dict[str, Any] = {"spacing": None, "spacing_known": False}
        if img.aspect is not None:
            extra["pixel_aspect"] = [img.aspect[0], img.aspect[1]]
        return img.aspect or (1.0, 1.0), extra

    def _window(self, data: np.ndarray, img: DicomImage, rgb: bool) -> Any:
        voi = img.voi if self.opts.use_file_window else None
        modality = self.cfg.modality or img.modality  # the recipe's modality decides when it is given
        return resolve_window(data, modality, self.cfg.window, img.photometric, voi, rgb=rgb)

    # loading ----------------------------------------------------------------------------------------------
    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        try:
            if unit.payload["kind"] == "volume":
                yield from self._load_volume(unit)
            else:
                yield from self._load_file(unit.payload["geoms"][0].rel, unit.payload.get("segs", []))
        except (ValueError, IndexError, MemoryError) as e:  # last-resort guard: one bad unit never kills a run
            yield self.reject(unit.key, f"{unit.key}: {type(e).__name__}: {e}")

    def _load_file(self, rel: str, segs: list[str]) -> Iterator[Item | Reject]:
        try:
            img = read_dicom(self.root / rel)
        except DicomReadError as e:
            yield self.reject(rel, f"{rel}: {e.problem}")
            return
        sensitive = set(img.sensitive)
        if img.may_have_burned_in_text and self.opts.burned_in != "keep":
            if self.opts.burned_in == "crop_or_reject" and img.tissue_regions:
                x0 = min(b[0] for b in img.tissue_regions)
                y0 = min(b[1] for b in img.tissue_regions)
                x1 = max(b[2] for b in img.tissue_regions)
                y1 = max(b[3] for b in img.tissue_regions)
                if segs:
                    yield self.reject(rel, f"{rel}: may carry burned-in text and has a SEG; cropping both is not "
                                      f"supported, set options.burned_in: keep after checking the pixels")
                    return
                img.frames = img.frames[:, y0:y1, x0:x1]
            else:
                said = "BurnedInAnnotation is YES" if img.burned_in == "YES" else \
                    f"BurnedInAnnotation is absent on a {img.modality} image"
                yield self.reject(rel, f"{rel}: may carry burned-in identifying text ({said}) and defines no "
                                  f"ultrasound tissue region to crop to; set options.burned_in: keep only after "
                                  f"checking the pixels", stage="privacy")
                return
        masks, names = None, {}
        if segs and img.frames.shape[0] > 1:
            for seg_rel in segs:
                yield self.reject(seg_rel, f"{seg_rel}: DICOM SEG on a multi-frame image is not supported")
        elif segs:
            lab, names, seg_sensitive, rejects = self._read_segs(segs, [img.sop_uid], (1, *img.frames.shape[1:3]), rel)
            sensitive |= seg_sensitive
            yield from rejects
            masks = None if lab is None else lab[0]
        scrub = Scrubber(sensitive, protected=self.protected_terms())  # checks labels and copied free text
        labels, problem = self._labels(img, rel, scrub)
        if problem and masks is None:
            yield self.reject(rel, problem, stage="validate")
            return
        n = img.frames.shape[0]
        choice = self._window(img.frames, img, img.rgb)  # percentiles ignore NaN/Inf: fill them after this
        bad = BadVoxels(img.frames)
        bad.fill(img.frames)
        (row_mm, col_mm), geometry = self._geometry(img)
        body = self._body(img, scrub)  # the same for every frame
        extra = self._extra(img, scrub, **geometry)
        for f in _frame_indices(n, self.opts.frames):
            sub = rel if n == 1 else f"{rel}@frame{f:04d}"
            problem = bad.problem(0, f)
            if problem:
                yield self.reject(sub, f"{sub}: {problem}", stage="validate")
                continue
            arr = resample_square(img.frames[f], row_mm, col_mm, order=1)
            arr = arr if img.rgb else choice.apply(arr)
            regions, mask, present = [], None, {}
            if masks is not None:
                mask = resample_square(masks, row_mm, col_mm, order=0)
                present = {v: names[v] for v in present_values(mask)}
                regions = mask_to_regions(mask, present, min_size=self.opts.min_region_size,
                                          per_component=self.opts.per_component)
            yield Item(array=arr, source_file=rel, patient_raw=img.patient_id,
                       labels=sorted(set(labels) | set(labels_of(present, list(present)))), regions=regions,
                       modality=img.modality, body_region=body, view=img.view,
                       window=choice.name, slice=None if n == 1 else {"frame": f, "of": n},
                       dimension="2d", task="seg" if masks is not None else "cls",
                       extra=bad.noted(extra, 0, f),
                       mask=None if mask is None else mask.astype(np.uint16), mask_values=present,
                       sensitive=set(sensitive))

    def _load_volume(self, unit: Unit) -> Iterator[Item | Reject]:
        geoms: list[SliceGeometry] = unit.payload["geoms"]
        segs: list[str] = unit.payload.get("segs", [])
        good: list[tuple[SliceGeometry, DicomImage]] = []
        for g in geoms:
            try:
                good.append((g, read_dicom(self.root / g.rel)))
            except DicomReadError as e:
                yield self.reject(g.rel, f"{g.rel}: {e.problem}")
        problem = series_problem([g for g, _ in good]) if len(good) >= 2 else "fewer than 2 readable slices"
        if problem is None and any(im.rgb for _, im in good):
            problem = "colour images"
        if problem is None and self.opts.burned_in != "keep" and any(im.may_have_burned_in_text for _, im in good):
            problem = "burned-in text policy"  # single images: each is cropped or rejected with its reason
        if problem is not None:  # fall back to single images, each with the SEGs that reference it
            refs, rejects = self._seg_refs(segs, {g.sop_uid for g, _ in good})
            yield from rejects
            for g, _ in good:
                yield from self._load_file(g.rel, [r for r in refs if g.sop_uid in refs[r]])
            return
        first = good[0][1]
        sensitive: set[str] = set().union(*(im.sensitive for _, im in good))
        stack = np.stack([im.frames[0] for _, im in good])
        vol, spacing, ornt = to_canonical(stack, series_affine([g for g, _ in good]))
        label_vol, names = None, {}
        if segs:
            lab, names, seg_sensitive, rejects = self._read_segs(segs, [g.sop_uid for g, _ in good], stack.shape,
                                                                 unit.key)
            sensitive |= seg_sensitive
            yield from rejects
            if lab is not None and lab.any():
                label_vol = apply_canonical(lab, ornt)
        del stack
        scrub = Scrubber(sensitive, protected=self.protected_terms())
        labels, problem = self._labels(first, good[0][0].rel, scrub)
        if problem and label_vol is None:
            yield self.reject(unit.key, problem, stage="validate")
            return
        choice = self._window(vol, first, False)  # percentiles ignore NaN/Inf: fill them after this
        bad = BadVoxels(vol)
        bad.fill(vol)
        extra = self._extra(first, scrub, spacing=[round(s, 4) for s in spacing], slices=len(good))
        common = dict(source_file=unit.key, patient_raw=first.patient_id, modality=first.modality,
                      body_region=self._body(first, scrub), window=choice.name, dimension="3d")
        # the plane the series was acquired in, unless the recipe names axes; too coarse axes are skipped
        axes, skipped = split_axes(self.cfg.slicing.axes_or(AXIS_NAMES[acquisition_axis(ornt)]), spacing,
                                   self.cfg.slicing.max_spacing_ratio)
        for axis, _ratio in skipped:
            yield self.reject(f"{unit.key}@{axis}", coarse_axis_reason(unit.key, axis, spacing,
                                                                       self.cfg.slicing.max_spacing_ratio), "filter")

        def sliced(axis: str, index: int) -> tuple[np.ndarray | None, dict[str, Any], Reject | None]:
            sub = f"{unit.key}@{axis}{index:04d}"
            problem = bad.problem(AXES[axis], index)
            if problem:
                return None, extra, self.reject(sub, f"{sub}: {problem}", stage="validate")
            return (choice.apply(extract_slice(vol, axis, index, spacing, order=1)),
                    bad.noted(extra, AXES[axis], index), None)

        if label_vol is not None:
            singles = [v for v, x in names.items() if isinstance(x, str)]
            groups = {v: values_of(names, names[v]) for v in singles}  # type: ignore[arg-type]
            here = set(present_values(label_vol))
            fg = [v for v in singles if here.intersection(groups[v])]
            picks = select_slices(label_vol, self.cfg.slicing, spacing, fg, axes=axes, value_groups=groups)
            if not picks and axes:
                yield self.reject(unit.key, f"{unit.key}: no slice has a SEG area of at least "
                                            f"{self.cfg.slicing.min_area} pixels", stage="validate")
            for axis, index, group in group_picks(picks):
                img2d, item_extra, rej = sliced(axis, index)
                if img2d is None:
                    yield rej  # type: ignore[misc]
                    continue
                lab2d = extract_slice(label_vol, axis, index, spacing, order=0)
                present = {v: names[v] for v in present_values(lab2d)}
                regions = [] if all(p.label_value is None for p in group) else mask_to_regions(
                    lab2d, present, min_size=self.opts.min_region_size, per_component=self.opts.per_component)
                yield Item(array=img2d, labels=labels_of(present, list(present)), regions=regions, view=axis,
                           slice={"axis": axis, "index": int(index), "of": int(vol.shape[AXES[axis]])}, task="seg",
                           extra=item_extra, mask=lab2d.astype(np.uint16), mask_values=present,
                           sensitive=set(sensitive), **common)
            return
        for axis in axes:
            n = vol.shape[AXES[axis]]
            for index in even_indices(range(n), self.opts.slices_per_series):
                img2d, item_extra, rej = sliced(axis, index)
                if img2d is None:
                    yield rej  # type: ignore[misc]
                    continue
                yield Item(array=img2d, labels=list(labels), view=axis, task="cls",
                           slice={"axis": axis, "index": int(index), "of": int(n)}, extra=item_extra,
                           sensitive=set(sensitive), **common)
