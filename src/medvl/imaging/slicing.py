"""3D -> 2D: display-oriented slices resampled to square pixels, and which slices to take.

Volumes here are in closest-canonical RAS voxel order (nibabel's ``as_closest_canonical``): index 0 grows
towards the patient's Right, index 1 towards Anterior, index 2 towards Superior; ``spacing`` is the voxel
size in mm along those three axes. Slices come out in radiological display orientation:

- axial: anterior at the top, patient right on the image left;
- coronal: superior at the top, patient right on the image left;
- sagittal: superior at the top, anterior on the image left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
AXIS_NAMES: dict[int, str] = {v: k for k, v in AXES.items()}
MAX_NONFINITE_FRACTION = 0.01  # a slice with more NaN/Inf pixels than this is skipped, never emitted


@dataclass(frozen=True)
class SlicePick:
    """One chosen slice: axis name, index along that canonical axis, the label value it was picked for
    (None for an unlabelled pick) and that label's area in resampled pixels."""

    axis: str
    index: int
    label_value: int | None
    area: float


def _axis_id(axis: str) -> int:
    if axis not in AXES:
        raise ValueError(f"unknown slice axis {axis!r}; allowed: {', '.join(AXES)}")
    return AXES[axis]


def in_plane_spacing(axis: str, spacing: Sequence[float]) -> tuple[float, float]:
    """(row, column) pixel spacing in mm of a display slice along ``axis``."""
    a = _axis_id(axis)
    rest = [float(spacing[i]) for i in range(3) if i != a]
    # the display slice is the remaining two axes transposed: rows = the later axis, columns = the earlier
    return rest[1], rest[0]


def spacing_ratio(axis: str, spacing: Sequence[float]) -> float:
    """How much resampling to square pixels stretches a display slice along ``axis``: the coarser over the
    finer of its two in-plane spacings (1 = square pixels; 53 mm slices under 0.7 mm pixels give 76)."""
    row_mm, col_mm = in_plane_spacing(axis, spacing)
    return max(row_mm, col_mm) / min(row_mm, col_mm)


def split_axes(axes: Sequence[str], spacing: Sequence[float],
               max_ratio: float) -> tuple[list[str], list[tuple[str, float]]]:
    """(axes to slice, [(axis, ratio)] skipped because their spacing ratio exceeds ``max_ratio``): slices
    across very coarse spacing are streaks, not images."""
    keep: list[str] = []
    skipped: list[tuple[str, float]] = []
    for axis in axes:
        ratio = spacing_ratio(axis, spacing)
        if ratio > max_ratio + 1e-9:
            skipped.append((axis, ratio))
        else:
            keep.append(axis)
    return keep, skipped


def coarse_axis_reason(key: str, axis: str, spacing: Sequence[float], max_ratio: float) -> str:
    """The reject reason for an axis skipped by :func:`split_axes` (names the file, the axis and the ratio)."""
    row_mm, col_mm = in_plane_spacing(axis, spacing)
    return (f"{key}: {axis} slices skipped: their pixels would be {row_mm:.4g} x {col_mm:.4g} mm, a spacing ratio "
            f"of {spacing_ratio(axis, spacing):.1f} > slicing.max_spacing_ratio {max_ratio:g} (streaks, not images)")


def square_shape(shape: tuple[int, int], row_mm: float, col_mm: float) -> tuple[int, int]:
    """Output shape of a (rows, cols) image with that pixel spacing resampled to square pixels of the
    finest of the two spacings."""
    target = min(row_mm, col_mm)
    return (max(1, int(round(shape[0] * row_mm / target))), max(1, int(round(shape[1] * col_mm / target))))


def resample_square(img: np.ndarray, row_mm: float, col_mm: float, order: int = 1) -> np.ndarray:
    """Resample a 2D image (or (H, W, C) colour image) to square pixels (finest spacing kept).
    ``order`` 0 = nearest neighbour (label maps), 1 = linear (images)."""
    if row_mm <= 0 or col_mm <= 0 or not np.isfinite([row_mm, col_mm]).all():
        raise ValueError(f"pixel spacing must be positive, got ({row_mm}, {col_mm})")
    h, w = img.shape[:2]
    oh, ow = square_shape((h, w), row_mm, col_mm)
    if (oh, ow) == (h, w):
        return img
    zoom: tuple[float, ...] = (oh / h, ow / w) + (1.0,) * (img.ndim - 2)
    src = img
    if order > 0 and not np.issubdtype(img.dtype, np.floating):
        src = img.astype(np.float32)
    out = ndimage.zoom(src, zoom, order=order, mode="nearest", grid_mode=True)
    if out.dtype != img.dtype:
        if np.issubdtype(img.dtype, np.integer):
            info = np.iinfo(img.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = out.astype(img.dtype)
    return out


def raw_slice(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The display-oriented slice without resampling (see module docstring for orientation)."""
    a = _axis_id(axis)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    n = volume.shape[a]
    if not 0 <= index < n:
        raise IndexError(f"{axis} slice {index} is outside 0..{n - 1}")
    # basic indexing is a view; np.take would first copy the whole (often non-contiguous) volume
    plane = volume[(slice(None),) * a + (index,)]  # (earlier axis, later axis)
    return np.ascontiguousarray(plane.T[::-1, ::-1])


def extract_slice(volume: np.ndarray, axis: str, index: int, spacing: Sequence[float], order: int = 1) -> np.ndarray:
    """A 2D slice in radiological display orientation, resampled to square pixels (finest in-plane
    spacing); ``order=0`` for label maps, 1 for images."""
    row_mm, col_mm = in_plane_spacing(axis, spacing)
    return resample_square(raw_slice(volume, axis, index), row_mm, col_mm, order=order)


def slice_areas(label_volume: np.ndarray, axis: str, value: int, spacing: Sequence[float]) -> np.ndarray:
    """Per-slice area of ``label_volume == value`` along ``axis``, in resampled (square) pixels:
    voxel count times the in-plane pixel area over the square pixel area."""
    return _scaled_areas(_slice_counts(label_volume == value, _axis_id(axis)), axis, spacing)


def _slice_counts(binary: np.ndarray, a: int) -> np.ndarray:
    """Non-zero voxels of each slice of a 3D boolean volume along axis ``a``."""
    return np.count_nonzero(binary, axis=tuple(i for i in range(3) if i != a))


def _all_slice_counts(binary: np.ndarray, axes: set[int]) -> dict[int, np.ndarray]:
    """``_slice_counts`` for several axes; axes 0 and 1 share one projection along axis 2."""
    out: dict[int, np.ndarray] = {}
    if 0 in axes or 1 in axes:
        proj = binary.sum(axis=2, dtype=np.int64)  # (axis 0, axis 1) voxel counts
        if 0 in axes:
            out[0] = proj.sum(axis=1)
        if 1 in axes:
            out[1] = proj.sum(axis=0)
    if 2 in axes:
        out[2] = _slice_counts(binary, 2)
    return out


def _scaled_areas(counts: np.ndarray, axis: str, spacing: Sequence[float]) -> np.ndarray:
    counts = counts.astype(np.float64)
    row_mm, col_mm = in_plane_spacing(axis, spacing)
    target = min(row_mm, col_mm)
    return counts * (row_mm * col_mm) / (target * target)


def even_indices(candidates: Sequence[int], count: int) -> list[int]:
    """``count`` evenly spaced entries of ``candidates`` (sorted), avoiding the two ends when possible."""
    cands = sorted(int(c) for c in candidates)
    if count <= 0 or not cands:
        return []
    if count >= len(cands):
        return cands
    pos = np.linspace(0, len(cands) - 1, count + 2)[1:-1]
    picked: list[int] = []
    for p in pos:
        idx = cands[int(np.floor(p + 0.5))]
        if idx not in picked:
            picked.append(idx)
    return sorted(picked)


def _policy_get(policy: Any, key: str, default: Any) -> Any:
    if isinstance(policy, dict):
        return policy.get(key, default)
    return getattr(policy, key, default)


def select_slices(label_volume: np.ndarray, policy: Any, spacing: Sequence[float],
                  label_values: Iterable[int], axes: Sequence[str] | None = None,
                  value_groups: Mapping[int, Sequence[int]] | None = None) -> list[SlicePick]:
    """Slices to take from a labelled volume (``policy`` is a ``SlicingPolicy`` or a dict of its fields).

    Per label value and per axis (``axes``, else ``policy.axes``, else axial): the ``per_label`` slices with
    the largest area (ties -> lower index), each with area >= ``min_area``, picks of one label at least
    ``min_gap`` slices apart; plus ``unlabelled`` evenly spaced slices containing none of the label values.
    ``value_groups`` maps a label value to every voxel value that shows it (its own value and the overlap
    values it is part of, see ``imaging.labelmap``), so a label's area is that of its full mask. Ordered by
    axis, then index, then label value (None last)."""
    axes = list(axes if axes is not None else (_policy_get(policy, "axes", None) or ["axial"]))
    per_label = int(_policy_get(policy, "per_label", 3))
    min_area = float(_policy_get(policy, "min_area", 64))
    unlabelled = int(_policy_get(policy, "unlabelled", 0))
    min_gap = int(_policy_get(policy, "min_gap", 2))
    values = sorted({int(v) for v in label_values})
    axis_ids = [_axis_id(axis) for axis in axes]
    # one comparison pass per label value, shared by every axis
    counts: dict[int, dict[int, np.ndarray]] = {}
    for value in values:
        group = list((value_groups or {}).get(value, [value]))
        binary = label_volume == group[0] if len(group) == 1 else np.isin(label_volume, group)
        counts[value] = _all_slice_counts(binary, set(axis_ids))
    picks: list[SlicePick] = []
    for axis, a in zip(axes, axis_ids):
        any_label = np.zeros(label_volume.shape[a], dtype=bool)
        for value in values:
            areas = _scaled_areas(counts[value][a], axis, spacing)
            any_label |= areas > 0
            order = sorted(range(len(areas)), key=lambda i: (-areas[i], i))
            chosen: list[int] = []
            for i in order:
                if len(chosen) >= per_label or areas[i] < min_area:
                    break
                if all(abs(i - c) >= min_gap for c in chosen):
                    chosen.append(i)
            picks.extend(SlicePick(axis, i, value, float(areas[i])) for i in chosen)
        empty = [i for i in range(label_volume.shape[a]) if not any_label[i]]
        picks.extend(SlicePick(axis, i, None, 0.0) for i in even_indices(empty, unlabelled))
    rank = {ax: n for n, ax in enumerate(axes)}
    picks.sort(key=lambda p: (rank[p.axis], p.index, p.label_value is None, p.label_value or 0))
    return picks


def group_picks(picks: Sequence[SlicePick]) -> list[tuple[str, int, list[SlicePick]]]:
    """Picks merged per (axis, index), keeping first-seen order: a slice picked for several labels is
    emitted once."""
    groups: dict[tuple[str, int], list[SlicePick]] = {}
    for p in picks:
        groups.setdefault((p.axis, p.index), []).append(p)
    return [(ax, idx, ps) for (ax, idx), ps in groups.items()]


class BadVoxels:
    """The non-finite (NaN/Inf) voxels of a float volume (or of a (frames, rows, cols) stack), found once.

    Policy: a slice or frame with more than ``MAX_NONFINITE_FRACTION`` non-finite pixels is skipped (the
    caller rejects it naming the file and these counts); in what remains, the few non-finite voxels are set
    to the lowest finite value of the volume (displayed black) by :meth:`fill` before resampling and
    windowing, and the item records how many pixels were filled."""

    def __init__(self, volume: np.ndarray):
        self.total = int(volume.size)
        self.mask: np.ndarray | None = None
        self.count = 0
        self.fill_value = 0.0
        if np.issubdtype(volume.dtype, np.floating):
            finite = np.isfinite(volume)
            self.count = self.total - int(np.count_nonzero(finite))
            if self.count:
                self.mask = ~finite
                if self.count < self.total:
                    self.fill_value = float(np.min(volume, where=finite, initial=np.inf))

    def fill(self, volume: np.ndarray) -> None:
        """Set the non-finite voxels of ``volume`` (the array this was computed on) in place."""
        if self.mask is not None:
            volume[self.mask] = self.fill_value

    def _plane(self, axis: int, index: int) -> np.ndarray | None:
        return None if self.mask is None else self.mask[(slice(None),) * axis + (index,)]

    def count_in(self, axis: int, index: int) -> int:
        """Non-finite pixels of the plane ``index`` along array axis ``axis`` (before any fill)."""
        plane = self._plane(axis, index)
        return 0 if plane is None else int(np.count_nonzero(plane))

    def noted(self, extra: dict[str, Any], axis: int, index: int) -> dict[str, Any]:
        """A copy of an item's ``extra`` saying how many non-finite pixels of this plane were filled (if any)."""
        n = self.count_in(axis, index)
        return {**extra, "nonfinite_filled": n} if n else dict(extra)

    def problem(self, axis: int, index: int) -> str | None:
        """Why that plane must not be emitted (too many non-finite pixels), or None."""
        plane = self._plane(axis, index)
        if plane is None:
            return None
        bad, size = int(np.count_nonzero(plane)), int(plane.size)
        if bad <= MAX_NONFINITE_FRACTION * size:
            return None
        return (f"{bad} of {size} pixels ({100.0 * bad / size:.1f}%) are NaN/Inf (more than "
                f"{100 * MAX_NONFINITE_FRACTION:g}% allowed; {self.count} of {self.total} voxels of the file are "
                f"non-finite); slice skipped")
