"""Draw a region on a copy of an image: a box outline, a semi-transparent mask, or the mask's contour.

Used by ``bench-build`` for GMAI-MMBench's box / mask / contour granularities. Functions take and return
(H, W, 3) uint8 arrays and never modify their input. Line widths scale with the image so the marks stay
visible on large images (``line_width``). Contours are computed with scipy morphology (no scikit-image)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Color = tuple[int, int, int]


def line_width(height: int, width: int) -> int:
    """Outline thickness in pixels for an image of this size (2 px up to 256 px, then ~1/128 of the short side)."""
    return max(2, int(round(min(height, width) / 128)))


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """A 2D gray or (H, W, 1|3|4) uint8 array as a new (H, W, 3) uint8 array."""
    if arr.dtype != np.uint8:
        raise ValueError(f"overlay expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]).copy()
    raise ValueError(f"overlay expects a 2D or (H, W, 3) image, got shape {arr.shape}")


def draw_box(image: np.ndarray, box: Sequence[float], color: Color = (255, 0, 0), width: int | None = None) -> np.ndarray:
    """Outline ``box`` (pixel x1, y1, x2, y2 with x2/y2 exclusive) just outside its edges, so the boxed content
    stays visible; sides that touch the image border are drawn just inside instead."""
    out = to_rgb(image)
    h, w = out.shape[:2]
    t = width or line_width(h, w)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, min(w - 1, x1)), max(0, min(h - 1, y1))
    x2, y2 = max(x1 + 1, min(w, x2)), max(y1 + 1, min(h, y2))
    col = np.array(color, dtype=np.uint8)
    # each side as a band (outside when there is room, inside otherwise)
    top = (max(0, y1 - t), y1) if y1 - t >= 0 else (y1, min(y2, y1 + t))
    bottom = (y2, min(h, y2 + t)) if y2 + t <= h else (max(y1, y2 - t), y2)
    left = (max(0, x1 - t), x1) if x1 - t >= 0 else (x1, min(x2, x1 + t))
    right = (x2, min(w, x2 + t)) if x2 + t <= w else (max(x1, x2 - t), x2)
    xa, xb = left[0], right[1]
    ya, yb = top[0], bottom[1]
    out[top[0]:top[1], xa:xb] = col
    out[bottom[0]:bottom[1], xa:xb] = col
    out[ya:yb, left[0]:left[1]] = col
    out[ya:yb, right[0]:right[1]] = col
    return out


def draw_mask(image: np.ndarray, mask: np.ndarray, color: Color = (0, 255, 0), alpha: float = 0.4) -> np.ndarray:
    """Blend ``color`` over the pixels where ``mask`` is true, with opacity ``alpha`` (0..1)."""
    out = to_rgb(image)
    m = _check_mask(mask, out)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    col = np.array(color, dtype=np.float64)
    blended = out[m].astype(np.float64) * (1.0 - alpha) + col * alpha
    out[m] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def contour_mask(mask: np.ndarray, width: int) -> np.ndarray:
    """Boolean band of about ``width`` pixels along the boundary of ``mask`` (half inside, half outside)."""
    m = mask.astype(bool)
    inner = max(1, width // 2)
    outer = max(0, width - inner)
    eroded = ndimage.binary_erosion(m, iterations=inner, border_value=0)
    grown = ndimage.binary_dilation(m, iterations=outer) if outer else m
    return grown & ~eroded


def draw_contour(image: np.ndarray, mask: np.ndarray, color: Color = (255, 0, 0), width: int | None = None) -> np.ndarray:
    """Draw the outline of ``mask`` in ``color`` (the region itself is left unpainted)."""
    out = to_rgb(image)
    m = _check_mask(mask, out)
    band = contour_mask(m, width or line_width(*out.shape[:2]))
    out[band] = np.array(color, dtype=np.uint8)
    return out


def _check_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    return mask.astype(bool)
