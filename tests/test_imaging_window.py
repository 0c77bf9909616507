"""Window presets, percentile normalization and render() on real DICOM data."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvl.imaging.window import (WINDOW_PRESETS, apply_window, percentile_bounds, percentile_normalize, render,
                                  resolve_window)


def test_presets_are_the_published_values():
    assert WINDOW_PRESETS["lung"] == (-600, 1500)
    assert WINDOW_PRESETS["soft_tissue"] == WINDOW_PRESETS["abdomen"] == (40, 400)
    assert WINDOW_PRESETS["bone"] == (480, 2500)
    assert WINDOW_PRESETS["stroke"] == (40, 40)


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_window_boundaries(name):
    level, width = WINDOW_PRESETS[name]
    lo, hi = level - width / 2, level + width / 2
    arr = np.array([lo - 1000, lo, level, hi, hi + 1000, np.nan])
    out = apply_window(arr, level, width)
    assert out.dtype == np.uint8
    assert out[0] == 0 and out[1] == 0
    assert out[3] == 255 and out[4] == 255
    assert out[2] in (127, 128)
    assert out[5] == 0  # NaN -> lowest


def test_window_is_monotonic_and_deterministic():
    x = np.linspace(-1200, 1200, 5001)
    a, b = apply_window(x, -600, 1500), apply_window(x, -600, 1500)
    assert np.array_equal(a, b)
    assert np.all(np.diff(a.astype(int)) >= 0)


def test_percentile_normalize():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 20, size=(64, 64))
    img[0, 0] = 1e6  # outlier ignored by the 99.5th percentile
    out = percentile_normalize(img)
    assert out.dtype == np.uint8
    vlo, vhi = percentile_bounds(img)
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
    assert percentile_bounds(img, mask=mask)[1] <= img[mask].max()


def test_render_ct_hu_default_soft_tissue():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out, name = render(hu, "CT", None)
    assert name == "soft_tissue"
    assert np.array_equal(out, apply_window(hu, 40, 400))
    out2, name2 = render(hu, "CT", {"level": -600, "width": 1500})
    assert name2 == "L-600/W1500" and not np.array_equal(out, out2)
    assert render(hu, "CT", "lung")[1] == "lung"


def test_render_mr_uses_percentile_and_presets_do_not_apply():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    arr = ds.pixel_array.astype(float)
    out, name = render(arr, "MR", None)
    assert name == "percentile" and np.array_equal(out, percentile_normalize(arr))
    assert render(arr, "MR", "lung")[1] == "percentile"
    assert render(arr, "MR", None, voi=(600.0, 1200.0))[1] == "dicom_voi"


def test_monochrome1_inverted_after_windowing():
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))
    arr = ds.pixel_array[::8, ::8].astype(float)
    m2, _ = render(arr, "CR", "percentile", photometric="MONOCHROME2")
    m1, _ = render(arr, "CR", "percentile", photometric="MONOCHROME1")
    assert np.array_equal(m1.astype(int), 255 - m2.astype(int))


def test_native_keeps_rgb_and_uint8():
    rgb = pydicom.dcmread(get_testdata_file("US1_UNCI.dcm")).pixel_array
    out, name = render(rgb, "US", None)
    assert name == "native" and out is rgb
    gray = (np.arange(256, dtype=np.uint8)[None, :]).repeat(4, 0)
    assert np.array_equal(render(gray, "OT", "native")[0], gray)
    with pytest.raises(ValueError):
        resolve_window(gray.astype(float), "MR", "no_such_window")
