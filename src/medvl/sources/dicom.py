"""A folder of DICOM files (any nesting): single images, multi-frame files, series and DICOM SEG.

``mode: auto`` groups files by SeriesInstanceUID; a series of >= 2 single-frame slices with consistent
geometry becomes a volume (ordered by ImagePositionPatient along the slice normal, never by file name),
reoriented to RAS and sliced with the recipe's slicing policy; other files are single images, and
multi-frame files give ``frames`` frames (``all``, ``middle`` or N evenly spaced; default 5).
``mode: files`` treats every file alone; ``mode: series`` keeps only volumes (and multi-frame files).

With ``seg: true`` DICOM SEG files are matched to their source images by SOPInstanceUID; their segments
become regions (task "seg"). A SEG whose referenced images are not in the folder is rejected; SEG files
are never rendered as images. Classification labels come from ``label_from`` (a header field or the
parent folder name) and/or a fixed ``label``.

Privacy: identifying header values go only to ``Item.sensitive``; ``patient_raw`` is the PatientID (the
pipeline hashes it). Only StudyDescription / SeriesDescription / BodyPartExamined are copied to ``extra``,
and dropped when they contain an identifying value. Volume units are keyed by their folder (plus
``/series-NN`` when several series share a folder)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import Field

from medvl.core.records import Reject
from medvl.imaging.boxes import mask_to_regions
from medvl.imaging.slicing import AXES, even_indices, extract_slice, group_picks, resample_square, select_slices
from medvl.imaging.window import resolve_window
from medvl.io.dicom import (DICOMDIR_SOP_CLASS, DicomImage, DicomReadError, SliceGeometry, apply_canonical,
                            identifying_values,
                            order_series, read_dataset, read_dicom, read_seg, seg_references, series_affine,
                            series_problem, slice_geometry, to_canonical)
from medvl.core.privacy import Scrubber
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

LabelField = Literal["none", "StudyDescription", "SeriesDescription", "BodyPartExamined", "folder"]


class DicomOptions(SourceOptions):
    """Options of the ``dicom`` source."""

    mode: Literal["auto", "files", "series"] = "auto"
    frames: Literal["all", "middle"] | int = Field(5, description="frames of multi-frame files: all, middle or N")
    seg: bool = True
    label_from: LabelField = "none"
    label: str | None = None
    slices_per_series: int | None = Field(None, ge=1, description="slices of unlabelled volumes (per axis)")
    min_region_size: int = Field(16, ge=1)
    per_component: bool = True
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
    01/19/2004, a name as Doe_John): such free text is not used as a label or copied into metadata."""
    return scrub(text) != text


@SOURCES.register("dicom")
class DicomSource(Source):
    """DICOM folder: images, multi-frame files, series volumes and matched SEG masks."""

    task = "cls"
    Options = DicomOptions
    opts: DicomOptions

    # enumeration ------------------------------------------------------------------------------------------
    def units(self) -> Iterator[Unit | Reject]:
        images: list[SliceGeometry] = []
        segs: list[tuple[str, list[str]]] = []
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(self.root).parts):
                continue
            rel = self.rel(p)
            try:
                ds = read_dataset(p, header_only=True)
            except DicomReadError as e:
                yield self.reject(rel, f"{rel}: {e.problem}")
                continue
            self.sensitive |= identifying_values(ds)
            if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
                yield self.reject(rel, f"{rel}: DICOMDIR index file, not an image")
                continue
            geom = slice_geometry(ds, rel)
            if geom.is_seg:
                segs.append((rel, seg_references(ds)))
            elif geom.rows < 1 or geom.cols < 1:
                yield self.reject(rel, f"{rel}: DICOM file without an image (no Rows/Columns)")
            else:
                images.append(geom)
        units, rejects = self._group(images)
        yield from rejects
        by_sop = {g.sop_uid: n for n, u in enumerate(units) for g in u.payload["geoms"] if g.sop_uid}
        for rel, refs in segs:
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

    def _segment_names(self, segments: dict[int, str]) -> dict[int, str]:
        return {n: self.cfg.label_map.get(str(n), name) for n, name in segments.items()}

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
        for seg_rel in segs:
            if img.frames.shape[0] > 1:
                yield self.reject(seg_rel, f"{seg_rel}: DICOM SEG on a multi-frame image is not supported")
                continue
            try:
                sm = read_seg(self.root / seg_rel, [img.sop_uid])
            except DicomReadError as e:
                yield self.reject(seg_rel, f"{seg_rel}: {e.problem}")
                continue
            sensitive |= sm.sensitive
            m = sm.masks.get(img.sop_uid)
            if m is not None and m.shape != img.frames.shape[1:3]:
                yield self.reject(seg_rel, f"{seg_rel}: DICOM SEG mask is {m.shape[1]}x{m.shape[0]} but its image "
                                           f"{rel} is {img.frames.shape[2]}x{img.frames.shape[1]}", stage="validate")
            elif m is not None:
                masks = m if masks is None else np.where(m > 0, m, masks)
                names.update(self._segment_names(sm.segments))
        scrub = Scrubber(sensitive)  # one per file: checks labels and the free text copied below
        labels, problem = self._labels(img, rel, scrub)
        if problem and masks is None:
            yield self.reject(rel, problem, stage="validate")
            return
        n = img.frames.shape[0]
        choice = self._window(img.frames, img, img.rgb)
        row_mm, col_mm = img.spacing
        body = self._body(img, scrub)  # the same for every frame
        extra = self._extra(img, scrub, spacing=[round(row_mm, 4), round(col_mm, 4)])
        for f in _frame_indices(n, self.opts.frames):
            sub = rel if n == 1 else f"{rel}@frame{f:04d}"
            frame = img.frames[f]
            if not img.rgb and not np.isfinite(frame).any():
                yield self.reject(sub, f"{sub}: frame has no finite values")
                continue
            arr = resample_square(frame, row_mm, col_mm, order=1)
            arr = arr if img.rgb else choice.apply(arr)
            regions, mask = [], None
            if masks is not None:
                mask = resample_square(masks, row_mm, col_mm, order=0)
                regions = mask_to_regions(mask, names, min_size=self.opts.min_region_size,
                                          per_component=self.opts.per_component)
            yield Item(array=arr, source_file=rel, patient_raw=img.patient_id,
                       labels=sorted(set(labels) | {r.label for r in regions}), regions=regions,
                       modality=img.modality, body_region=body, view=img.view,
                       window=choice.name, slice=None if n == 1 else {"frame": f, "of": n},
                       dimension="2d", task="seg" if masks is not None else "cls",
                       extra=dict(extra),
                       mask=None if mask is None else mask.astype(np.uint16),
                       mask_values={v: names[v] for v in sorted(names) if mask is not None and np.any(mask == v)},
                       sensitive=set(sensitive))

    def _load_volume(self, unit: Unit) -> Iterator[Item | Reject]:
        geoms: list[SliceGeometry] = unit.payload["geoms"]
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
        if problem is not None:  # fall back to single images
            for g, _ in good:
                yield from self._load_file(g.rel, [])
            return
        first = good[0][1]
        sensitive: set[str] = set().union(*(im.sensitive for _, im in good))
        stack = np.stack([im.frames[0] for _, im in good])
        vol, spacing, ornt = to_canonical(stack, series_affine([g for g, _ in good]))
        label_vol, names = None, {}
        sops = [g.sop_uid for g, _ in good]
        for seg_rel in unit.payload.get("segs", []):
            try:
                sm = read_seg(self.root / seg_rel, sops)
            except DicomReadError as e:
                yield self.reject(seg_rel, f"{seg_rel}: {e.problem}")
                continue
            sensitive |= sm.sensitive
            lab = np.zeros(stack.shape, dtype=np.int32)
            for z, uid in enumerate(sops):
                m = sm.masks.get(uid)
                if m is not None and m.shape == stack.shape[1:]:
                    lab[z] = m
            canon = apply_canonical(lab, ornt)
            label_vol = canon if label_vol is None else np.where(canon > 0, canon, label_vol)
            names.update(self._segment_names(sm.segments))
        scrub = Scrubber(sensitive)
        labels, problem = self._labels(first, good[0][0].rel, scrub)
        if problem and label_vol is None:
            yield self.reject(unit.key, problem, stage="validate")
            return
        choice = self._window(vol, first, False)
        extra = self._extra(first, scrub, spacing=[round(s, 4) for s in spacing], slices=len(good))
        common = dict(source_file=unit.key, patient_raw=first.patient_id, modality=first.modality,
                      body_region=self._body(first, scrub), window=choice.name, dimension="3d")
        if label_vol is not None and np.any(label_vol):
            fg = sorted(int(v) for v in np.unique(label_vol) if v != 0)
            picks = select_slices(label_vol, self.cfg.slicing, spacing, fg)
            if not picks:
                yield self.reject(unit.key, f"{unit.key}: no slice has a SEG area of at least "
                                            f"{self.cfg.slicing.min_area} pixels", stage="validate")
            for axis, index, group in group_picks(picks):
                img2d = choice.apply(extract_slice(vol, axis, index, spacing, order=1))
                lab2d = extract_slice(label_vol, axis, index, spacing, order=0)
                regions = [] if all(p.label_value is None for p in group) else mask_to_regions(
                    lab2d, names, min_size=self.opts.min_region_size, per_component=self.opts.per_component)
                present = {v: names[v] for v in fg if v in names and np.any(lab2d == v)}
                yield Item(array=img2d, labels=sorted({r.label for r in regions}), regions=regions, view=axis,
                           slice={"axis": axis, "index": int(index), "of": int(vol.shape[AXES[axis]])}, task="seg",
                           extra=dict(extra), mask=lab2d.astype(np.uint16), mask_values=present,
                           sensitive=set(sensitive), **common)
            return
        count = self.opts.slices_per_series or self.cfg.slicing.unlabelled or 5
        for axis in self.cfg.slicing.axes:
            n = vol.shape[AXES[axis]]
            for index in even_indices(range(n), count):
                img2d = choice.apply(extract_slice(vol, axis, index, spacing, order=1))
                yield Item(array=img2d, labels=list(labels), view=axis, task="cls",
                           slice={"axis": axis, "index": int(index), "of": int(n)}, extra=dict(extra),
                           sensitive=set(sensitive), **common)
