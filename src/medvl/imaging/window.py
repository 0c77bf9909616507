"""Intensity handling: CT window presets (HU), percentile normalization, and ``render`` which turns any
medical pixel array (HU, MR signal, X-ray counts, RGB) into the uint8 image a record stores.

Rules: CT with a preset or an explicit ``{level, width}`` is windowed on Hounsfield units (default preset
``soft_tissue``); other modalities use 0.5-99.5 percentile normalization (or the file's own VOI window when
one is given and the recipe names none); ``"native"`` keeps uint8 / RGB data as it is; DICOM MONOCHROME1
images are inverted after windowing so that white always means high signal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (90.0, 150.0),
    "bone": (480.0, 2500.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 200.0),
    "stroke": (40.0, 40.0),
}
DEFAULT_CT_WINDOW = "soft_tissue"
_MAX_STAT_VOXELS = 4_000_000  # percentile statistics on larger arrays use a regular subsample


def apply_window(arr: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear window: ``lo = level - width/2`` maps to 0, ``hi = level + width/2`` to 255, values outside
    are clipped; rounding is half-up (deterministic). NaN pixels become 0."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = float(level) - float(width) / 2.0
    a = np.subtract(np.asarray(arr), lo, dtype=np.float64)  # one float64 buffer, then in place
    # times 255, then divided by the width (not times 255/width, which is inexact): for integer HU and windows
    # the quotient is then correctly rounded, so an exact half (the level itself: 127.5) rounds up as documented
    a *= 255.0
    a /= float(width)
    np.clip(a, 0.0, 255.0, out=a)  # +inf -> 255, -inf -> 0; NaN stays NaN
    if np.isnan(a).any():
        a[np.isnan(a)] = 0.0
    a += 0.5
    np.floor(a, out=a)
    return a.astype(np.uint8)


def _stat_sample(arr: np.ndarray) -> np.ndarray:
    if arr.size <= _MAX_STAT_VOXELS:
        return arr
    step = int(np.ceil((arr.size / _MAX_STAT_VOXELS) ** (1.0 / arr.ndim)))
    return arr[tuple(slice(None, None, step) for _ in range(arr.ndim))]


def percentile_bounds(arr: np.ndarray, lo: float = 0.5, hi: float = 99.5,
                      mask: np.ndarray | None = None) -> tuple[float, float]:
    """The ``lo`` and ``hi`` percentiles of the finite values (inside ``mask`` when given). Falls back to
    min/max when the percentiles coincide. Raises ValueError when there is no finite value."""
    a = np.asarray(arr)
    if mask is not None:
        a = a[np.asarray(mask, dtype=bool)]
    # subsample before widening to float64 (same values, without a float64 copy of the whole volume)
    a = np.asarray(_stat_sample(a), dtype=np.float64)
    vals = a[np.isfinite(a)]
    if vals.size == 0:
        raise ValueError("image has no finite values (all NaN/inf or empty mask)")
    vlo, vhi = (float(v) for v in np.percentile(vals, [lo, hi]))
    if vhi <= vlo:
        vlo, vhi = float(vals.min()), float(vals.max())
    return vlo, vhi


def _scale(arr: np.ndarray, vlo: float, vhi: float) -> np.ndarray:
    if vhi <= vlo:  # constant image
        return np.zeros(np.shape(arr), dtype=np.uint8)
    return apply_window(arr, (vlo + vhi) / 2.0, vhi - vlo)


def percentile_normalize(arr: np.ndarray, lo: float = 0.5, hi: float = 99.5,
                         mask: np.ndarray | None = None) -> np.ndarray:
    """Map the [lo, hi] percentile range of the finite values to 0..255 (uint8). A constant image gives
    zeros; an all-NaN image raises ValueError."""
    vlo, vhi = percentile_bounds(arr, lo, hi, mask)
    return _scale(arr, vlo, vhi)


@dataclass(frozen=True)
class WindowChoice:
    """A resolved intensity mapping: apply it to any slice of the array it was resolved on."""

    name: str  # preset name, "L40/W400" style for explicit windows, "percentile", "dicom_voi", "native"
    level: float | None = None  # None for native (no mapping)
    width: float | None = None
    invert: bool = False  # MONOCHROME1

    def apply(self, arr: np.ndarray) -> np.ndarray:
        if self.level is None or self.width is None:
            out = _native(arr)
        elif self.width <= 0:
            out = np.zeros(np.shape(arr), dtype=np.uint8)
        else:
            out = apply_window(arr, self.level, self.width)
        return (255 - out) if self.invert else out


def _native(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    vals = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
    if vals.size == 0:
        raise ValueError("image has no finite values")
    return _scale(a, float(vals.min()), float(vals.max()))


def _is_ct(modality: str | None) -> bool:
    return modality is not None and modality.strip().upper() in ("CT", "COMPUTED TOMOGRAPHY", "CECT", "NCCT")


def _window_spec(window: Any) -> tuple[float, float] | None:
    if isinstance(window, dict) and "level" in window and "width" in window:
        return float(window["level"]), float(window["width"])
    if hasattr(window, "level") and hasattr(window, "width"):
        return float(window.level), float(window.width)
    if isinstance(window, (tuple, list)) and len(window) == 2:
        return float(window[0]), float(window[1])
    return None


def resolve_window(arr: np.ndarray, modality: str | None, window: Any = None,
                   photometric: str | None = None, voi: tuple[float, float] | None = None,
                   rgb: bool | None = None) -> WindowChoice:
    """Decide how ``arr`` (a slice or a whole volume) maps to uint8.

    ``window``: None, a preset name, ``{level, width}`` (dict / object / pair), ``"percentile"`` or
    ``"native"``. CT presets apply to CT (or unknown modality); for a known non-CT modality a preset name
    falls back to percentile, since presets are in HU. ``voi`` (the file's WindowCenter/Width) is used for
    non-CT data when no window is given. RGB arrays (``rgb``; by default: 3-D uint8 with 3 channels last)
    are always kept native."""
    invert = (photometric or "").upper() == "MONOCHROME1"
    a = np.asarray(arr)
    if rgb is None:
        rgb = a.ndim == 3 and a.shape[-1] == 3 and a.dtype == np.uint8
    if rgb:
        return WindowChoice("native")
    spec = _window_spec(window)
    if spec is not None:
        lvl, wid = spec
        return WindowChoice(f"L{lvl:g}/W{wid:g}", lvl, wid, invert)
    name = window.lower() if isinstance(window, str) else None
    if name == "native":
        return WindowChoice("native", invert=invert)
    if name in WINDOW_PRESETS and (_is_ct(modality) or modality is None):
        lvl, wid = WINDOW_PRESETS[name]
        return WindowChoice(name, lvl, wid, invert)
    if name is None and _is_ct(modality):
        lvl, wid = WINDOW_PRESETS[DEFAULT_CT_WINDOW]
        return WindowChoice(DEFAULT_CT_WINDOW, lvl, wid, invert)
    if name is None and voi is not None and voi[1] > 1:
        return WindowChoice("dicom_voi", float(voi[0]), float(voi[1]), invert)
    if name not in (None, "percentile") and name not in WINDOW_PRESETS:
        raise ValueError(f"unknown window {window!r}; allowed: {', '.join(WINDOW_PRESETS)}, percentile, native")
    vlo, vhi = percentile_bounds(a)
    if vhi <= vlo:
        return WindowChoice("percentile", vlo, 0.0, invert)
    return WindowChoice("percentile", (vlo + vhi) / 2.0, vhi - vlo, invert)


def render(arr: np.ndarray, modality: str | None, window: Any = None, photometric: str | None = None,
           voi: tuple[float, float] | None = None, rgb: bool | None = None) -> tuple[np.ndarray, str]:
    """uint8 image and the name of the window used (see :func:`resolve_window`)."""
    choice = resolve_window(arr, modality, window, photometric, voi, rgb)
    return choice.apply(arr), choice.name
