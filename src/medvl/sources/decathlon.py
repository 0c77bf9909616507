"""Medical Segmentation Decathlon layout: ``dataset.json`` (``name``, ``modality`` {"0": "CT"}, ``labels``
{"0": "background", "1": "spleen"}, ``training`` [{"image": "./imagesTr/x.nii.gz", "label":
"./labelsTr/x.nii.gz"}], ``test`` ["./imagesTs/y.nii.gz"]) with NIfTI volumes.

One unit per training case (plus one per test image with ``include_test``). Each volume is read in RAS,
the slicing policy picks the largest-area slices per label and axis (axial unless ``slicing.axes`` says
otherwise), slices are resampled to square pixels, windowed (CT presets on HU, percentile otherwise; bounds
computed once per volume) and each connected component of the resampled label slice becomes a region.

Test images (``test`` in dataset.json, usually ``imagesTs/``; no labels) are read only with
``options.include_test``, and then give ``options.test_slices`` evenly spaced slices per axis: that is the
only count for them (``slicing.unlabelled`` means unlabelled slices of *labelled* volumes). Without
``include_test`` the source leaves a note (shown in summary.json warnings) saying how many were not read.
4D images (e.g. BraTS) use ``options.channel``.

Rejects (naming the file): missing/unreadable/truncated files, image/label shape mismatch, empty label
volume, label values missing from the label map, all-NaN image, paths escaping the dataset root, slices
whose regions are all smaller than ``min_region_size``, slices with more than 1% NaN/Inf pixels (the few
non-finite voxels of other slices are shown as the volume's lowest value), and axes whose slices would be
stretched more than ``slicing.max_spacing_ratio`` (stage "filter")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import Field

from medvl.core.records import Reject
from medvl.imaging.boxes import present_values, mask_to_regions
from medvl.imaging.slicing import (AXES, BadVoxels, coarse_axis_reason, even_indices, extract_slice, group_picks,
                                   select_slices, split_axes)
from medvl.imaging.window import resolve_window
from medvl.io.nifti import NiftiReadError, load_label_nifti, load_nifti
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit


class DecathlonOptions(SourceOptions):
    """Options of the ``decathlon`` source."""

    channel: int = Field(0, ge=0, description="channel of 4D multi-modal images (e.g. BraTS: 0 = FLAIR)")
    include_test: bool = Field(False, description="also slice the test images listed in dataset.json (no labels)")
    test_slices: int = Field(5, ge=1, description="evenly spaced slices per axis for each test image (the only "
                             "count for them; slicing.unlabelled applies to labelled volumes)")
    min_region_size: int = Field(16, ge=1, description="smallest region (pixels of the resampled slice) that "
                                 "becomes a box")
    per_component: bool = Field(True, description="one box per connected component (false: one box per label)")


def _fmt(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:10]) + (f" (+{len(values) - 10} more)" if len(values) > 10 else "")


def _mask_dtype(top: int) -> type:
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32


@SOURCES.register("decathlon")
class DecathlonSource(Source):
    """Medical Segmentation Decathlon task folder (``dataset.json`` + ``imagesTr``/``labelsTr``)."""

    task = "seg"
    Options = DecathlonOptions
    opts: DecathlonOptions

    # enumeration ------------------------------------------------------------------------------------------
    def _read_json(self) -> dict[str, Any]:
        path = self.root / "dataset.json"
        if not path.is_file():
            raise ValueError("dataset.json: not found in the dataset folder")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"dataset.json: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
            raise ValueError("dataset.json: expected an object with a 'training' list")
        return meta

    def _rel(self, entry: Any, field: str, where: str) -> tuple[str | None, str | None]:
        """A dataset.json path -> (path relative to root, None) or (None, problem)."""
        if not isinstance(entry, str) or not entry.strip():
            return None, f"dataset.json {where}: '{field}' is missing or not a path"
        p = Path(entry)
        full = p if p.is_absolute() else self.root / p
        if not self.inside_root(full):
            return None, f"{entry}: path in dataset.json {where} escapes the dataset root"
        return self.rel(full), None

    def units(self) -> Iterator[Unit | Reject]:
        try:
            meta = self._read_json()
        except ValueError as e:
            yield self.reject("dataset.json", str(e))
            return
        modalities = meta.get("modality") if isinstance(meta.get("modality"), dict) else {}
        modality = modalities.get(str(self.opts.channel))
        label_map = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()} if isinstance(
            meta.get("labels"), dict) else {}
        common = {"modality": None if modality is None else str(modality), "labels": label_map}
        entries: list[tuple[Any, Any, str]] = []
        for n, case in enumerate(meta["training"]):
            if isinstance(case, dict):
                entries.append((case.get("image"), case.get("label"), f"training[{n}]"))
            else:
                entries.append((None, None, f"training[{n}]"))
        tests = meta.get("test") if isinstance(meta.get("test"), list) else []
        if self.opts.include_test:
            for n, case in enumerate(tests):
                image = case.get("image") if isinstance(case, dict) else case
                entries.append((image, "", f"test[{n}]"))
            if tests and self.cfg.slicing.unlabelled:
                self.notes.append(f"{len(tests)} test image(s) (no labels) give options.test_slices = "
                                  f"{self.opts.test_slices} slices per axis each; slicing.unlabelled = "
                                  f"{self.cfg.slicing.unlabelled} applies to the labelled training volumes only")
        elif tests:
            self.notes.append(f"{len(tests)} test image(s) listed in dataset.json ('test', e.g. imagesTs/) were not "
                              "read (they have no labels); set options.include_test: true to slice them "
                              f"(options.test_slices = {self.opts.test_slices} slices per axis each)")
        for image, label, where in entries:
            img_rel, problem = self._rel(image, "image", where)
            if img_rel is None:
                yield self.reject(str(image) if isinstance(image, str) else f"dataset.json#{where}", problem or "")
                continue
            lab_rel = None
            if label != "":
                lab_rel, problem = self._rel(label, "label", where)
                if lab_rel is None:
                    yield self.reject(img_rel, problem or "")
                    continue
            yield Unit(key=img_rel, payload={**common, "label": lab_rel})

    # loading ----------------------------------------------------------------------------------------------
    def _label_map(self, payload: dict[str, Any]) -> dict[int, str]:
        """dataset.json "labels", overridden value by value by the recipe's ``label_map``."""
        out: dict[int, str] = {}
        for source in (payload.get("labels") or {}, self.cfg.label_map or {}):
            for k, v in source.items():
                try:
                    out[int(k)] = str(v)
                except ValueError:
                    continue
        return out

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        key, lab_rel = unit.key, unit.payload.get("label")
        try:
            image = load_nifti(self.root / key, channel=self.opts.channel)
        except NiftiReadError as e:
            yield self.reject(key, f"{key}: {e.problem}")
            return
        modality = self.cfg.modality or unit.payload.get("modality")
        try:
            choice = resolve_window(image.data, modality, self.cfg.window, rgb=False)
        except ValueError as e:
            yield self.reject(key, f"{key}: {e}")
            return
        bad = BadVoxels(image.data)  # the window above ignores non-finite voxels; fill them after it
        bad.fill(image.data)
        base = {"spacing": [round(s, 4) for s in image.spacing]}
        if image.channels > 1:
            base["channel"] = image.channel
        axes, skipped = split_axes(self.cfg.slicing.axes_or("axial"), image.spacing,
                                   self.cfg.slicing.max_spacing_ratio)
        yield from self._coarse(key, skipped, image.spacing)
        if lab_rel is None:
            yield from self._unlabelled(key, image.data, image.spacing, axes, bad, choice, modality, base)
            return
        try:
            label, _ = load_label_nifti(self.root / lab_rel)
        except NiftiReadError as e:
            yield self.reject(key, f"{lab_rel} (label of {key}): {e.problem}")
            return
        if label.shape != image.data.shape:
            yield self.reject(key, f"{key}: image shape {image.data.shape} and label shape {label.shape} "
                                   f"({lab_rel}) differ", stage="validate")
            return
        names = self._label_map(unit.payload)
        present = present_values(label)
        missing = [v for v in present if v not in names]
        if missing:
            yield self.reject(key, f"{lab_rel}: label values {_fmt(missing)} are not in the label map "
                                   f"(known: {_fmt(sorted(names))})", stage="validate")
            return
        fg = [v for v in present if names[v].lower() != "background"]
        if not fg:
            yield self.reject(key, f"{lab_rel}: label volume is empty", stage="validate")
            return
        if not axes:
            return  # every axis was skipped for its spacing: the rejects above say why
        picks = select_slices(label, self.cfg.slicing, image.spacing, fg, axes=axes)
        if not picks:
            yield self.reject(key, f"{lab_rel}: no slice has a label area of at least "
                                   f"{self.cfg.slicing.min_area} pixels", stage="validate")
            return
        values = {v: names[v] for v in fg}
        for axis, index, group in group_picks(picks):
            sub = f"{key}@{axis}{index:04d}"
            problem = bad.problem(AXES[axis], index)
            if problem:
                yield self.reject(sub, f"{sub}: {problem}", stage="validate")
                continue
            extra = bad.noted(base, AXES[axis], index)
            img2d = choice.apply(extract_slice(image.data, axis, index, image.spacing, order=1))
            lab2d = extract_slice(label, axis, index, image.spacing, order=0)
            sl = {"axis": axis, "index": int(index), "of": int(label.shape[AXES[axis]])}
            if all(p.label_value is None for p in group):
                yield self._item(key, img2d, sl, choice.name, modality, extra, [], None, {})
                continue
            regions = mask_to_regions(lab2d, values, min_size=self.opts.min_region_size,
                                      per_component=self.opts.per_component)
            if not regions:
                yield self.reject(sub, f"{sub}: no region of at least {self.opts.min_region_size} pixels "
                                       "in this slice", stage="validate")
                continue
            total = float(lab2d.size)
            counts = np.bincount(lab2d.ravel(), minlength=max(fg) + 1)  # one pass for every label's area
            frac = {values[v]: round(float(counts[v]) / total, 6) for v in fg if counts[v]}
            dtype = _mask_dtype(max(fg))
            others = counts.copy()
            others[0] = 0
            others[fg] = 0
            if others.any():  # values outside the foreground (e.g. a second "background" value) become 0
                keep = np.zeros(counts.size, dtype=bool)
                keep[fg] = True
                mask = np.where(keep[lab2d], lab2d, 0).astype(dtype)
            else:  # lab2d is this slice's own copy: no need to copy it again
                mask = lab2d.astype(dtype, copy=False)
            here = {v: values[v] for v in fg if counts[v]}
            yield self._item(key, img2d, sl, choice.name, modality, {**extra, "area_fraction": frac},
                             regions, mask, here)

    def _coarse(self, key: str, skipped: list[tuple[str, float]],
                spacing: tuple[float, float, float]) -> Iterator[Reject]:
        """One "filter" reject per axis skipped because its slices would be stretched too much."""
        for axis, _ratio in skipped:
            yield self.reject(f"{key}@{axis}", coarse_axis_reason(key, axis, spacing,
                                                                  self.cfg.slicing.max_spacing_ratio), stage="filter")

    def _unlabelled(self, key: str, data: np.ndarray, spacing: tuple[float, float, float], axes: list[str],
                    bad: BadVoxels, choice: Any, modality: str | None, base: dict[str, Any]) -> Iterator[Item | Reject]:
        """``test_slices`` evenly spaced slices per axis of a test image (no labels)."""
        produced = False
        for axis in axes:
            n = data.shape[AXES[axis]]
            for index in even_indices(range(n), self.opts.test_slices):
                sub = f"{key}@{axis}{index:04d}"
                problem = bad.problem(AXES[axis], index)
                if problem:
                    yield self.reject(sub, f"{sub}: {problem}", stage="validate")
                    continue
                plane = extract_slice(data, axis, index, spacing, order=1)
                sl = {"axis": axis, "index": int(index), "of": int(n)}
                produced = True
                yield self._item(key, choice.apply(plane), sl, choice.name, modality,
                                 bad.noted(base, AXES[axis], index), [], None, {})
        if not produced and axes:
            yield self.reject(key, f"{key}: no usable slice")

    def _item(self, key: str, array: np.ndarray, sl: dict[str, Any], window: str, modality: str | None,
              extra: dict[str, Any], regions: list, mask: np.ndarray | None, values: dict[int, str]) -> Item:
        return Item(array=array, source_file=key, patient_raw=None, labels=sorted({r.label for r in regions}),
                    regions=regions, modality=modality, window=window, slice=sl, dimension="3d",
                    task="seg", extra=dict(extra), mask=mask, mask_values=values)
