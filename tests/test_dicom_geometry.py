"""Geometry that is not invented (issue 6, item 10): unknown pixel spacing stays unknown, axes whose slices
would be streaks across coarse spacing are skipped and reported, and DICOM series are sliced in the plane
they were acquired in unless the recipe names axes.

Real files: ``emri_small.dcm`` (an enhanced MR without any pixel spacing), ``CT_small.dcm`` series copies,
``MR2_UNCI.dcm`` (an oblique sagittal 1024 x 1024 MR) as a 4-slice series along its own slice normal, and the
MNI152 template as a Decathlon case with thick slices."""

from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nilearn import datasets
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medvl.io.dicom import slice_normal
from medvl.pipeline.recipe import RecipeError, SourceConfig, parse_recipe
from medvl.sources import SOURCES
from source_helpers import run_source


def _source(root, fmt="dicom", **kw):
    return SOURCES.get(fmt)(SourceConfig(name="g", format=fmt, path=str(root), **kw))


def _series(folder, name="CT_small.dcm", n=6, gap=5.0, edit=None):
    """``n`` copies of a real image stacked ``gap`` mm apart along its own slice normal."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file(name))
    normal = slice_normal(tuple(float(v) for v in base.ImageOrientationPatient))
    series = generate_uid()
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [float(v) + gap * k * float(c) for v, c in zip(base.ImagePositionPatient, normal)]
        ds.InstanceNumber = k + 1
        if edit:
            edit(ds)
        ds.save_as(folder / f"{k:02d}.dcm")


def test_missing_pixel_spacing_is_unknown_not_one_mm(tmp_path):
    """emri_small.dcm carries no PixelSpacing anywhere: before, its records said spacing [1.0, 1.0]."""
    (tmp_path / "mr").mkdir()
    (tmp_path / "mr" / "emri.dcm").write_bytes(open(get_testdata_file("emri_small.dcm"), "rb").read())
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    ds.PixelAspectRatio = [2, 1]  # pixels twice as tall as wide: the shape is known, the size in mm is not
    ds.save_as(tmp_path / "aspect.dcm")
    _, items, rejects = run_source(_source(tmp_path, options={"frames": "middle"}))
    assert rejects == []
    by = {it.source_file: it for it in items}
    emri, aspect = by["mr/emri.dcm"], by["aspect.dcm"]
    assert emri.extra["spacing"] is None and emri.extra["spacing_known"] is False
    assert emri.array.shape == (64, 64)  # pixel grid kept as it is
    assert aspect.extra["spacing"] is None and aspect.extra["spacing_known"] is False
    assert aspect.extra["pixel_aspect"] == [2.0, 1.0] and aspect.array.shape == (256, 128)
    # a file with a spacing says it, with no flag
    (tmp_path / "ct").mkdir()
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(tmp_path / "ct" / "ct.dcm")
    _, (ct,), _ = run_source(_source(tmp_path / "ct"))
    assert ct.extra["spacing"] == [0.6615, 0.6615] and "spacing_known" not in ct.extra


def test_series_without_pixel_spacing_is_not_resliced(tmp_path):
    """Slices 5 mm apart with an unknown in-plane size cannot be stacked into a volume with true proportions:
    before, 1 mm pixels were invented and coronal slices came out squashed."""
    _series(tmp_path / "ct", edit=lambda ds: delattr(ds, "PixelSpacing"))
    _, items, rejects = run_source(_source(tmp_path, slicing={"axes": ["axial", "coronal"]}))
    assert rejects == [] and len(items) == 6
    assert all(it.dimension == "2d" and it.extra["spacing"] is None and it.extra["spacing_known"] is False
               for it in items)
    assert all(it.array.shape == (128, 128) for it in items)


def test_coarse_axes_are_skipped_and_reported(tmp_path):
    """Slices 53 mm apart under 0.66 mm pixels: coronal and sagittal reslices are streaks (ratio 80)."""
    _series(tmp_path / "ct", gap=53.0)
    all_axes = {"axes": ["axial", "coronal", "sagittal"]}
    _, items, rejects = run_source(_source(tmp_path, slicing=all_axes, options={"slices_per_series": 6}))
    assert [(it.slice["axis"], it.slice["index"]) for it in items] == [("axial", k) for k in range(6)]
    by = {r.item: r for r in rejects}
    assert set(by) == {"ct@coronal", "ct@sagittal"}
    ratio = 53.0 / 0.661468
    for axis in ("coronal", "sagittal"):
        r = by[f"ct@{axis}"]
        assert r.stage == "filter" and r.reason.startswith(f"ct: {axis} slices skipped")
        assert f"spacing ratio of {ratio:.1f} > slicing.max_spacing_ratio 4" in r.reason
    # the limit is the recipe's
    _, items, rejects = run_source(_source(tmp_path, slicing={**all_axes, "max_spacing_ratio": 100}))
    assert rejects == [] and {it.slice["axis"] for it in items} == {"axial", "coronal", "sagittal"}
    with pytest.raises(RecipeError, match="max_spacing_ratio"):
        parse_recipe({"sources": [{"name": "g", "format": "dicom", "path": str(tmp_path),
                                   "slicing": {"max_spacing_ratio": 0.5}}]})


def test_decathlon_thick_slices_skip_coronal_and_sagittal(tmp_path):
    tmpl = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    img = tmpl.get_fdata()[::3, ::3, ::15].astype(np.float32)  # 6 x 6 x 30 mm voxels
    lab = (gm[::3, ::3, ::15] > 0.5).astype(np.uint8)
    aff = tmpl.affine.copy()
    aff[:3, :3] = np.diag([6.0, 6.0, 30.0])
    for folder, data in (("imagesTr", img), ("labelsTr", lab)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(data, aff), tmp_path / folder / "b.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "t", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "grey matter"},
        "training": [{"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}]}))
    slicing = {"axes": ["axial", "coronal", "sagittal"], "per_label": 1, "min_area": 10}
    _, items, rejects = run_source(_source(tmp_path, "decathlon", slicing=slicing))
    assert [it.slice["axis"] for it in items] == ["axial"]
    assert sorted((r.item, r.stage) for r in rejects) == [("imagesTr/b.nii.gz@coronal", "filter"),
                                                         ("imagesTr/b.nii.gz@sagittal", "filter")]
    assert all("spacing ratio of 5.0 > slicing.max_spacing_ratio 4" in r.reason for r in rejects)
    _, items, rejects = run_source(_source(tmp_path, "decathlon", slicing={**slicing, "max_spacing_ratio": 5}))
    assert rejects == [] and len(items) == 3


def test_series_sliced_in_its_acquisition_plane(tmp_path):
    """MR2_UNCI.dcm is an oblique sagittal MR (ImageOrientationPatient 0.57/0.82/0, 0/0/-1): before, an
    unlabelled series of it was cut axially (4 slices x 6.6 mm under 0.2 mm pixels: 135-pixel streaks)."""
    _series(tmp_path / "mr", name="MR2_UNCI.dcm", n=4, gap=6.6)
    _, items, rejects = run_source(_source(tmp_path, window="percentile"))
    assert rejects == []
    assert [(it.slice["axis"], it.slice["index"], it.slice["of"]) for it in items] == [("sagittal", k, 4)
                                                                                      for k in range(4)]
    assert all(it.view == "sagittal" and it.array.shape == (1024, 1024) for it in items)
    # the acquired image itself, not a reslice: the display slice follows the stored rows and columns (rows run
    # head to foot, columns towards posterior: superior at the top, anterior on the left)
    raw = pydicom.dcmread(tmp_path / "mr" / "00.dcm").pixel_array.astype(float)
    assert np.corrcoef(items[0].array.ravel().astype(float), raw.ravel())[0, 1] > 0.99
    # axes named in the recipe win (here with a limit that lets the thick-slice axial cut through)
    _, items, rejects = run_source(_source(tmp_path, window="percentile",
                                           slicing={"axes": ["axial"], "max_spacing_ratio": 50}))
    assert rejects == [] and {it.slice["axis"] for it in items} == {"axial"}
    assert {it.array.shape for it in items} == {(1024, int(round(4 * 6.6 / 0.195313)))}
