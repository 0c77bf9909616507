"""3D -> 2D: display-oriented slices resampled to square pixels, and which slices to take.

Volumes here are in closest-canonical RAS voxel order (nibabel's ``as_closest_canonical``): index 0 grows
towards the patient's Right, index 1 towards Anterior, index 2 towards Superior; ``spacing`` is the voxel
size in mm along those three axes. Slices come out in radiological display orientation:

- axial: anterior at the top, patient right on the image left;
- coronal: superior at the top, patient right on the image left;
- sagittal: superior at the top, anterior on the image left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}


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
                  label_values: Iterable[int]) -> list[SlicePick]:
    """Slices to take from a labelled volume (``policy`` is a ``SlicingPolicy`` or a dict of its fields).

    Per label value and per axis in ``policy.axes``: the ``per_label`` slices with the largest area
    (ties -> lower index), each with area >= ``min_area``, picks of one label at least ``min_gap`` slices
    apart; plus ``unlabelled`` evenly spaced slices containing none of the label values. Ordered by axis
    (policy order), then index, then label value (None last)."""
    axes = list(_policy_get(policy, "axes", ["axial"]))
    per_label = int(_policy_get(policy, "per_label", 3))
    min_area = float(_policy_get(policy, "min_area", 64))
    unlabelled = int(_policy_get(policy, "unlabelled", 0))
    min_gap = int(_policy_get(policy, "min_gap", 2))
    values = sorted({int(v) for v in label_values})
    axis_ids = [_axis_id(axis) for axis in axes]
    # one comparison pass per label value, shared by every axis
    counts: dict[int, dict[int, np.ndarray]] = {}
    for value in values:
        counts[value] = _all_slice_counts(label_volume == value, set(axis_ids))
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
