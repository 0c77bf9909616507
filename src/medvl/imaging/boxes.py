"""Masks -> boxes, and boxes -> training text.

Boxes are pixel ``(x1, y1, x2, y2)`` with x2/y2 exclusive (a one-pixel object at column 5 is 5..6).
In text they become GMAI-VL's normalized form ``<box>[[0.31, 0.51, 0.74, 0.83]]</box>`` (2 decimals,
divided by width/height) and target names are wrapped as ``<ref>name</ref>``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medvl.core.records import Box, Region


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box of the non-zero pixels of a 2D mask, or None when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def present_values(label_mask: np.ndarray) -> list[int]:
    """Sorted non-zero values of an integer mask (a presence table for non-negative labels: much faster
    than np.unique, which sorts every pixel)."""
    if label_mask.size == 0:
        return []
    if np.issubdtype(label_mask.dtype, np.integer):
        lo, hi = int(label_mask.min()), int(label_mask.max())
        if lo >= 0 and hi <= 8:  # a few values: one vectorized comparison each beats a scatter
            flat = label_mask.ravel(order="K")
            buf = np.empty(flat.shape, dtype=bool)
            return [v for v in range(1, hi + 1) if np.equal(flat, v, out=buf).any()]
        if lo >= 0 and hi < 65536:  # a presence table filled by scatter: no sort, no int64 copy
            seen = np.zeros(hi + 1, dtype=bool)
            seen[label_mask.ravel(order="K")] = True  # "K": no copy of Fortran-ordered volumes
            return [int(v) for v in np.flatnonzero(seen) if v != 0]
    return sorted(int(v) for v in np.unique(label_mask) if v != 0)


def mask_to_regions(
    label_mask: np.ndarray,
    label_map: Mapping[int, str | Sequence[str]],
    min_size: int = 1,
    per_component: bool = True,
    connectivity: int = 2,
) -> list[Region]:
    """Regions of a 2D integer label mask: per label, one box per connected component of at least
    ``min_size`` pixels (or one box around all its pixels when ``per_component`` is False).
    A value may name several labels (a list: where segments overlap); a label's pixels are those of every
    value that names it, so each label's boxes come from its own full mask. Value 0 and labels named
    "background" are skipped. Output is ordered by the label's smallest value, then by component position
    (top-left first), so it is deterministic."""
    if label_mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {label_mask.shape}")
    from scipy import ndimage  # imported here: reading a plain image folder never needs scipy (0.5 s per process)

    regions: list[Region] = []
    structure = _STRUCTURES.get(connectivity)
    if structure is None:
        structure = _STRUCTURES[connectivity] = ndimage.generate_binary_structure(2, connectivity)
    crops = _value_crops(label_mask)
    by_label: dict[str, list[tuple[int, tuple[slice, slice] | None]]] = {}
    for value, crop in crops:  # by value: a label is first seen at its smallest value
        names = label_map.get(value)
        for name in ([] if names is None else [names] if isinstance(names, str) else names):
            if name.lower() != "background":
                by_label.setdefault(name, []).append((value, crop))
    for name, parts in by_label.items():
        crop = _union_crop([c for _, c in parts])
        sub = label_mask[crop] if crop is not None else label_mask
        values = [v for v, _ in parts]
        binary = sub == values[0] if len(values) == 1 else np.isin(sub, values)
        oy, ox = (crop[0].start, crop[1].start) if crop is not None else (0, 0)
        if per_component:
            comps, n = ndimage.label(binary, structure=structure)
            if n == 0:
                continue
            sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:].tolist()
            slices = ndimage.find_objects(comps, n)
            found = []
            for sl, size in zip(slices, sizes):
                if size < min_size or sl is None:
                    continue
                ys, xs = sl
                found.append(Region(label=name, box=(float(xs.start + ox), float(ys.start + oy),
                                                     float(xs.stop + ox), float(ys.stop + oy)),
                                    area=int(size), source="mask"))
            found.sort(key=lambda r: (r.box[1], r.box[0]))
            regions.extend(found)
        else:
            area = int(np.count_nonzero(binary))
            box = mask_box(binary)
            if box is not None and area >= min_size:
                box = (box[0] + ox, box[1] + oy, box[2] + ox, box[3] + oy)
                regions.append(Region(label=name, box=box, area=area, source="mask"))
    return regions


def _union_crop(crops: list[tuple[slice, slice] | None]) -> tuple[slice, slice] | None:
    """The bounding slices of several crops (None = whole image wins)."""
    if any(c is None for c in crops):
        return None
    if len(crops) == 1:
        return crops[0]
    return (slice(min(c[0].start for c in crops), max(c[0].stop for c in crops)),  # type: ignore[index]
            slice(min(c[1].start for c in crops), max(c[1].stop for c in crops)))  # type: ignore[index]


_STRUCTURES: dict[int, np.ndarray] = {}


def _value_crops(label_mask: np.ndarray) -> list[tuple[int, tuple[slice, slice] | None]]:
    """(value, bounding-box slices) of every non-zero value of a 2D mask, by value. Non-negative integer
    masks get all boxes from one ``find_objects`` pass (each value is then labelled in its box only);
    other masks fall back to whole-image crops (None)."""
    if label_mask.size and np.issubdtype(label_mask.dtype, np.integer) and label_mask.dtype.itemsize <= 4:
        lo, hi = int(label_mask.min()), int(label_mask.max())
        if lo >= 0 and hi < 65536:
            from scipy import ndimage

            boxes = ndimage.find_objects(label_mask, hi) if hi > 0 else []
            return [(v, sl) for v, sl in enumerate(boxes, start=1) if sl is not None]
    return [(v, None) for v in present_values(label_mask)]


def normalize_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel box -> [0, 1] xyxy, clipped, rounded to 2 decimals."""
    x1, y1, x2, y2 = box
    vals = (x1 / width, y1 / height, x2 / width, y2 / height)
    return tuple(round(min(1.0, max(0.0, v)), 2) for v in vals)  # type: ignore[return-value]


def box_to_text(box: Sequence[float] | Sequence[Sequence[float]], width: int, height: int) -> str:
    """``<box>[[x1, y1, x2, y2]]</box>`` with normalized coordinates; several boxes go in one tag."""
    boxes = [box] if box and not isinstance(box[0], (list, tuple)) else box
    inner = ", ".join("[" + ", ".join(f"{v:.2f}" for v in normalize_box(b, width, height)) + "]" for b in boxes)
    return f"<box>[{inner}]</box>"


def ref(name: str) -> str:
    return f"<ref>{name}</ref>"


def scale_regions(regions: Sequence[Region], sx: float, sy: float) -> list[Region]:
    """Regions after resizing an image by (sx, sy)."""
    out = []
    for r in regions:
        x1, y1, x2, y2 = r.box
        out.append(Region(label=r.label, box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy),
                          area=None if r.area is None else int(round(r.area * sx * sy)), source=r.source))
    return out


def box_inside(box: Sequence[float], width: int, height: int, tol: float = 1.0) -> bool:
    """True when the box is well-formed (x1 < x2, y1 < y2) and within the image (``tol`` pixels slack)."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        return False
    return x1 < x2 and y1 < y2 and x1 >= -tol and y1 >= -tol and x2 <= width + tol and y2 <= height + tol


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (max(0.0, float(x1)), max(0.0, float(y1)), min(float(width), float(x2)), min(float(height), float(y2)))
