"""Window presets, percentile normalization and render() on real DICOM data.

Every expected value is derived without the code under test: by hand from the definition (REFERENCE.md 4: lo =
L - W/2 maps to 0, hi = L + W/2 to 255, linear between, clipped; half-up rounding as window.py documents),
in exact rational arithmetic for whole images, and against two libraries: pydicom's DICOM windowing
(``apply_windowing`` with VOI LUT Function LINEAR_EXACT, PS3.3 C.11.2.1.3.2, the same definition) and
scikit-image's ``rescale_intensity`` for the 0.5-99.5 percentile mapping."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_windowing
from skimage.exposure import rescale_intensity

from medvl.imaging.window import (WINDOW_PRESETS, apply_window, percentile_bounds, percentile_normalize, render,
                                  resolve_window)


def _exact(x: float, level: float, width: float) -> int:
    """The definition in exact arithmetic: clip((x - (L - W/2)) * 255 / W, 0, 255), halves rounded up."""
    v = (Fraction(x) - Fraction(level) + Fraction(width) / 2) * 255 / Fraction(width)
    return math.floor(min(max(v, Fraction(0)), Fraction(255)) + Fraction(1, 2))


def _exact_image(arr: np.ndarray, level: float, width: float) -> np.ndarray:
    values, inverse = np.unique(arr, return_inverse=True)
    lut = np.array([_exact(float(v), level, width) for v in values], dtype=np.uint8)
    return lut[inverse].reshape(arr.shape)


def _pydicom_window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """pydicom's windowing to 0..255 (float64): an 8-bit unsigned output range, LINEAR_EXACT."""
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 8, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, "LINEAR_EXACT"
    return apply_windowing(np.asarray(arr, dtype=np.float64), ds)


def _assert_rounds_like(out: np.ndarray, ref: np.ndarray) -> None:
    """``out`` is ``ref`` rounded half-up; where ``ref`` lies within float error of a half (a tie that a float
    reference may put on either side) ``out`` may be either neighbour."""
    frac = ref - np.floor(ref)
    tie = np.abs(frac - 0.5) < 1e-6
    want = np.floor(ref + 0.5)
    assert np.array_equal(out[~tie], want[~tie]), int((out[~tie] != want[~tie]).sum())
    assert np.all(np.abs(out[tie].astype(float) - ref[tie]) <= 0.5 + 1e-6)
    assert (~tie).mean() > 0.9


def test_presets_are_the_published_values():
    """REFERENCE.md 4: lung -600/1500; mediastinum 50/350; soft tissue / abdomen 40/400; liver 90/150;
    bone 480/2500; brain 40/80; subdural 75/200; stroke 40/40."""
    assert WINDOW_PRESETS == {"lung": (-600, 1500), "mediastinum": (50, 350), "soft_tissue": (40, 400),
                              "abdomen": (40, 400), "liver": (90, 150), "bone": (480, 2500), "brain": (40, 80),
                              "subdural": (75, 200), "stroke": (40, 40)}


KNOWN = [  # (preset, HU, grey level) computed by hand: (HU - (L - W/2)) * 255 / W, halves up
    ("lung", -1350, 0), ("lung", 150, 255), ("lung", -600, 128), ("lung", -975, 64), ("lung", -2000, 0),
    ("lung", 1000, 255),
    ("soft_tissue", -160, 0), ("soft_tissue", 240, 255), ("soft_tissue", 40, 128), ("soft_tissue", 0, 102),
    ("soft_tissue", 100, 166), ("soft_tissue", -100, 38),
    ("mediastinum", -125, 0), ("mediastinum", 225, 255), ("mediastinum", 50, 128), ("mediastinum", 0, 91),
    ("liver", 15, 0), ("liver", 165, 255), ("liver", 90, 128), ("liver", 50, 60),  # 59.5 -> 60
    ("bone", -770, 0), ("bone", 1730, 255), ("bone", 480, 128), ("bone", 1000, 181),  # 180.54
    ("brain", 0, 0), ("brain", 80, 255), ("brain", 40, 128), ("brain", 20, 64), ("brain", 60, 191),
    ("subdural", -25, 0), ("subdural", 175, 255), ("subdural", 75, 128), ("subdural", 155, 230),  # 229.5
    ("subdural", 0, 32),
    ("stroke", 20, 0), ("stroke", 60, 255), ("stroke", 40, 128), ("stroke", 30, 64), ("stroke", 50, 191),
]


@pytest.mark.parametrize("name, hu, grey", KNOWN)
def test_window_known_values(name, hu, grey):
    level, width = WINDOW_PRESETS[name]
    assert int(apply_window(np.array([hu], dtype=np.int16), level, width)[0]) == grey
    assert int(apply_window(np.array([float(hu)]), level, width)[0]) == grey


def test_non_finite_values():
    out = apply_window(np.array([np.nan, -np.inf, np.inf]), -600, 1500)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 255]  # NaN -> lowest, as documented


def test_window_is_monotonic_and_deterministic():
    x = np.linspace(-1200, 1200, 5001)
    a, b = apply_window(x, -600, 1500), apply_window(x, -600, 1500)
    assert np.array_equal(a, b)
    assert np.all(np.diff(a.astype(int)) >= 0)


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_ct_presets_on_real_hounsfield_units_match_the_exact_definition(name):
    """CT_small.dcm converted to HU by pydicom's modality LUT; every pixel as the definition gives it."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds)
    out, used = render(hu, "CT", name)
    assert used == name
    assert np.array_equal(out, _exact_image(hu, *WINDOW_PRESETS[name]))


def test_ct_default_window_agrees_with_pydicom():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds)
    out, name = render(hu, "CT", None)
    assert name == "soft_tissue"
    _assert_rounds_like(out, _pydicom_window(hu, 40, 400))
    out2, name2 = render(hu, "CT", {"level": -600, "width": 1500})
    assert name2 == "L-600/W1500"
    _assert_rounds_like(out2, _pydicom_window(hu, -600, 1500))


def test_mr_percentile_normalization_agrees_with_skimage():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    arr = ds.pixel_array.astype(float)
    out, name = render(arr, "MR", None)
    assert name == "percentile"
    lo, hi = np.percentile(arr, [0.5, 99.5])
    _assert_rounds_like(out, rescale_intensity(arr, in_range=(lo, hi), out_range=(0.0, 255.0)))
    assert render(arr, "MR", "lung")[1] == "percentile"  # presets are HU: not applied to MR


def test_file_voi_window_agrees_with_pydicom():
    """MR_small.dcm's own WindowCenter/Width (600/1600), as pydicom applies it with LINEAR_EXACT."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    arr = ds.pixel_array.astype(float)
    out, name = render(arr, "MR", None, voi=(float(ds.WindowCenter), float(ds.WindowWidth)))
    assert name == "dicom_voi"
    _assert_rounds_like(out, _pydicom_window(arr, float(ds.WindowCenter), float(ds.WindowWidth)))


def test_monochrome1_is_inverted_after_windowing():
    """RG1_UNCI.dcm is MONOCHROME1 (low values white) with WindowCenter/Width 15000/30000."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    arr = ds.pixel_array[::8, ::8].astype(float)
    voi = (float(ds.WindowCenter), float(ds.WindowWidth))
    out, name = render(arr, "CR", None, photometric="MONOCHROME1", voi=voi)
    assert name == "dicom_voi"
    _assert_rounds_like(255 - out.astype(float), _pydicom_window(arr, *voi))
    # by hand: 895 (the darkest sampled value) -> 895 * 255 / 30000 = 7.61 -> 8 -> shown as 255 - 8 (near white)
    assert arr.min() == 895 and set(out[arr == 895].tolist()) == {247}


def test_percentile_normalize():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 20, size=(64, 64))
    img[0, 0] = 1e6  # outlier ignored by the 99.5th percentile
    out = percentile_normalize(img)
    assert out.dtype == np.uint8
    vlo, vhi = percentile_bounds(img)
    assert (vlo, vhi) == tuple(np.percentile(img, [0.5, 99.5]))
    assert vhi < 1e5
    assert out[0, 0] == 255
    assert (out == 0).mean() < 0.02 and (out == 255).mean() < 0.02
    with_nan = img.copy()
    with_nan[:8] = np.nan
    assert percentile_normalize(with_nan)[:8].max() == 0
    assert not percentile_normalize(np.full((8, 8), 7.0)).any()
    with pytest.raises(ValueError):
        percentile_normalize(np.full((4, 4), np.nan))
    mask = np.zeros_like(img, dtype=bool)
    mask[10:20, 10:20] = True
    assert percentile_bounds(img, mask=mask) == tuple(np.percentile(img[mask], [0.5, 99.5]))


def test_native_keeps_rgb_and_uint8():
    rgb = pydicom.dcmread(get_testdata_file("US1_UNCI.dcm")).pixel_array
    out, name = render(rgb, "US", None)
    assert name == "native" and out is rgb
    gray = (np.arange(256, dtype=np.uint8)[None, :]).repeat(4, 0)
    assert np.array_equal(render(gray, "OT", "native")[0], gray)
    with pytest.raises(ValueError):
        resolve_window(gray.astype(float), "MR", "no_such_window")
