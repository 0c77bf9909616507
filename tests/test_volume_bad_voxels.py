"""NaN/Inf voxels (issue 6, item 9): a slice or frame with more than 1% non-finite pixels is rejected with a
reason naming the file and the counts; the few non-finite pixels of other slices are filled with the volume's
lowest value and counted in ``extra["nonfinite_filled"]``. Never a black image carrying labels and boxes.

Real images: the MNI152 template with its grey-matter map (nilearn) as a Decathlon case, ``emri_small.dcm``
(10-frame MR) and ``CT_small.dcm`` rewritten as float-pixel DICOM (FloatPixelData, as parametric maps and
PET-derived images carry it) with NaN regions."""

from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nilearn import datasets
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid

from medvl.imaging.slicing import raw_slice
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES
from source_helpers import run_source

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


@pytest.fixture(scope="module")
def mni():
    """(image, grey-matter label, affine) at 6 mm (MNI152 2 mm template downsampled by 3; RAS already)."""
    tmpl = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()[::3, ::3, ::3]
    img = tmpl.get_fdata()[::3, ::3, ::3].astype(np.float32)
    aff = tmpl.affine.copy()
    aff[:3, :3] *= 3
    return img, (gm > 0.5).astype(np.uint8), aff


def _decathlon(root, img, lab, aff, test=None):
    for folder, name, data in (("imagesTr", "brain.nii.gz", img), ("labelsTr", "brain.nii.gz", lab)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, aff), root / folder / name)
    meta = {"name": "t", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "grey matter"},
            "training": [{"image": "./imagesTr/brain.nii.gz", "label": "./labelsTr/brain.nii.gz"}], "test": []}
    if test is not None:
        (root / "imagesTs").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(test, aff), root / "imagesTs" / "t.nii.gz")
        meta["test"] = ["./imagesTs/t.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(meta))


def test_decathlon_nan_slices_rejected_and_few_infs_filled(tmp_path, mni):
    img, lab, aff = mni
    img = img.copy()
    areas = lab.sum(axis=(0, 1))
    best = int(np.argmax(areas))  # the axial slice the policy picks first for grey matter
    img[:, :, best] = np.nan  # a fully NaN slice where the label is largest
    other = best + 4
    img[3, 4, other] = np.inf  # three non-finite voxels (well under 1% of the slice) on a picked slice
    img[5, 6, other] = -np.inf
    img[7, 8, other] = np.nan
    _decathlon(tmp_path, img, lab, aff, test=img)
    cfg = SourceConfig(name="mni", format="decathlon", path=str(tmp_path), options={"include_test": True,
                       "test_slices": 40}, slicing={"axes": ["axial"], "per_label": 30, "min_area": 1, "min_gap": 1})
    _, items, rejects = run_source(SOURCES.get("decathlon")(cfg))
    bad = [r for r in rejects if r.item.endswith(f"@axial{best:04d}")]
    assert {r.item.split("@")[0] for r in bad} == {"imagesTr/brain.nii.gz", "imagesTs/t.nii.gz"}
    n = img.shape[0] * img.shape[1]
    for r in bad:
        assert r.reason.startswith(r.item) and f"{n} of {n} pixels (100.0%) are NaN/Inf" in r.reason
        assert f"{n + 3} of {img.size} voxels" in r.reason and r.stage == "validate"
    assert items and all(np.isfinite(raw_slice(img, "axial", it.slice["index"])).mean() >= 0.99 for it in items)
    assert best not in {it.slice["index"] for it in items}
    filled = [it for it in items if it.slice["index"] == other]
    assert len(filled) == 2 and all(it.extra["nonfinite_filled"] == 3 for it in filled)
    assert all("nonfinite_filled" not in it.extra for it in items if it.slice["index"] != other)
    for it in filled:  # the filled voxels show the lowest value (black), not white (+inf) or anything random
        canon = raw_slice(np.isfinite(img).astype(np.uint8), "axial", other)
        assert (it.array[canon == 0] == 0).all() and it.array.max() > 0


def _float_dicom(ds, pixels):
    """``ds`` rewritten to hold ``pixels`` as 32-bit FloatPixelData (a Parametric Map-style float image)."""
    ds = copy.deepcopy(ds)
    del ds.PixelData
    for kw in ("BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
               "SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            delattr(ds, kw)
    ds.BitsAllocated = 32
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PARAMETRIC_MAP
    ds.FloatPixelData = np.ascontiguousarray(pixels, dtype=np.float32).tobytes()
    return ds


def test_dicom_frames_with_nan_are_rejected(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    frames = ds.pixel_array.astype(np.float32)  # (10, 64, 64)
    frames[3, :52] = np.nan  # 3328 of 4096 pixels
    frames[7] = np.inf
    frames[5, 10, 10:12] = np.nan  # 2 pixels: filled
    _float_dicom(ds, frames).save_as(tmp_path / "pmap.dcm")
    cfg = SourceConfig(name="d", format="dicom", path=str(tmp_path), window="percentile", options={"frames": "all"})
    _, items, rejects = run_source(SOURCES.get("dicom")(cfg))
    assert sorted(it.slice["frame"] for it in items) == [0, 1, 2, 4, 5, 6, 8, 9]
    by = {r.item: r for r in rejects}
    assert set(by) == {"pmap.dcm@frame0003", "pmap.dcm@frame0007"}
    assert "pmap.dcm@frame0003: 3328 of 4096 pixels (81.2%) are NaN/Inf" in by["pmap.dcm@frame0003"].reason
    assert "4096 of 4096 pixels (100.0%)" in by["pmap.dcm@frame0007"].reason
    assert f"{3328 + 4096 + 2} of {frames.size} voxels" in by["pmap.dcm@frame0007"].reason
    (five,) = [it for it in items if it.slice["frame"] == 5]
    assert five.extra["nonfinite_filled"] == 2 and (five.array[10, 10:12] == 0).all()


def test_dicom_series_with_a_nan_slice(tmp_path):
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(base.pixel_array, base).astype(np.float32)
    series = generate_uid()
    (tmp_path / "ct").mkdir()
    for k in range(6):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        pos = [float(v) for v in base.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.0 * k]
        px = hu + 10 * k
        if k == 2:
            px = np.full_like(hu, np.nan)
        out = _float_dicom(ds, px)
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        out.save_as(tmp_path / "ct" / f"{k}.dcm")
    cfg = SourceConfig(name="d", format="dicom", path=str(tmp_path), options={"slices_per_series": 6})
    _, items, rejects = run_source(SOURCES.get("dicom")(cfg))
    assert [r.item for r in rejects] == ["ct@axial0002"]
    assert "16384 of 16384 pixels (100.0%) are NaN/Inf" in rejects[0].reason
    assert [it.slice["index"] for it in items] == [0, 1, 3, 4, 5]
    assert all(it.array.max() > 0 for it in items)
