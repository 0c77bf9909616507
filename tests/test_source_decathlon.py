"""Decathlon source on a tiny MSD-layout dataset built from the MNI152 template and its GM/WM maps."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets

from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES
from source_helpers import run_source

LABELS = {"0": "background", "1": "grey matter", "2": "white matter"}


@pytest.fixture(scope="module")
def mni_small():
    """(image, label, affine) at 6 mm: the MNI152 2 mm template and GM/WM maps (> 0.5) downsampled by 3."""
    tmpl = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    img = tmpl.get_fdata()[::3, ::3, ::3].astype(np.float32)
    lab = np.zeros(img.shape, dtype=np.uint8)
    lab[gm[::3, ::3, ::3] > 0.5] = 1
    lab[wm[::3, ::3, ::3] > 0.5] = 2
    aff = tmpl.affine.copy()
    aff[:3, :3] *= 3
    return img, lab, aff


def _save(path, data, aff):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), path)


def _dataset(root, cases, test=(), labels=LABELS, modality=None):
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]
    meta = {"name": "MNIBrain", "description": "tiny test", "tensorImageSize": "3D",
            "modality": modality or {"0": "MRI"}, "labels": labels, "numTraining": len(training),
            "numTest": len(test), "training": training, "test": [f"./imagesTs/{t}.nii.gz" for t in test]}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))


def _source(root, **kw):
    cfg = SourceConfig(name="mni", format="decathlon", path=str(root), **kw)
    return SOURCES.get("decathlon")(cfg)


_run = run_source


def test_good_case_items_regions_and_slices(tmp_path, mni_small):
    img, lab, aff = mni_small
    _save(tmp_path / "imagesTr/brain_001.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/brain_001.nii.gz", lab, aff)
    _dataset(tmp_path, ["brain_001"])
    src = _source(tmp_path, slicing={"axes": ["axial", "coronal"], "per_label": 2, "min_area": 20,
                                     "unlabelled": 1, "min_gap": 2})
    units, items, rejects = _run(src)
    assert [u.key for u in units] == ["imagesTr/brain_001.nii.gz"]
    assert rejects == []
    labelled = [it for it in items if it.regions]
    unlabelled = [it for it in items if not it.regions]
    assert len(unlabelled) == 2  # one per axis
    assert {it.slice["axis"] for it in labelled} == {"axial", "coronal"}
    # per label and axis 2 picks, merged when one slice serves both labels
    assert 2 <= sum(it.slice["axis"] == "axial" for it in labelled) <= 4
    for it in items:
        assert it.array.dtype == np.uint8 and it.array.ndim == 2
        assert it.dimension == "3d" and it.task == "seg" and it.modality == "MRI" and it.window == "percentile"
        assert it.patient_raw is None and it.source_file == "imagesTr/brain_001.nii.gz"
        axis = {"sagittal": 0, "coronal": 1, "axial": 2}[it.slice["axis"]]
        assert it.slice["of"] == img.shape[axis] and 0 <= it.slice["index"] < img.shape[axis]
        assert it.extra["spacing"] == [6.0, 6.0, 6.0]
    for it in labelled:
        assert it.labels == sorted({r.label for r in it.regions})
        assert set(it.labels) <= {"grey matter", "white matter"}
        assert it.mask is not None and it.mask.shape == it.array.shape
        h, w = it.array.shape
        for r in it.regions:
            x1, y1, x2, y2 = r.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and r.area >= 16
            assert np.count_nonzero(it.mask[int(y1):int(y2), int(x1):int(x2)]) >= r.area
        assert 0 < sum(it.extra["area_fraction"].values()) < 1
    axial = [it for it in labelled if it.slice["axis"] == "axial"]
    assert all(it.array.shape == (img.shape[1], img.shape[0]) for it in axial)  # (A-P rows, R-L columns)
    # same inputs -> identical outputs
    _, again, _ = _run(_source(tmp_path, slicing={"axes": ["axial", "coronal"], "per_label": 2, "min_area": 20,
                                                  "unlabelled": 1, "min_gap": 2}))
    assert [(a.slice, a.labels) for a in again] == [(b.slice, b.labels) for b in items]
    assert all(np.array_equal(a.array, b.array) for a, b in zip(again, items))


def test_picks_are_largest_area_slices(tmp_path, mni_small):
    img, lab, aff = mni_small
    _save(tmp_path / "imagesTr/b.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/b.nii.gz", lab, aff)
    _dataset(tmp_path, ["b"], labels={"0": "background", "1": "grey matter", "2": "background"})
    _, items, rejects = _run(_source(tmp_path, slicing={"axes": ["axial"], "per_label": 1, "min_area": 10}))
    assert rejects == [] and len(items) == 1
    canon = nib.as_closest_canonical(nib.Nifti1Image(lab, aff)).get_fdata()
    best = int(np.argmax((canon == 1).sum(axis=(0, 1))))
    assert items[0].slice["index"] == best
    assert items[0].labels == ["grey matter"] and set(items[0].mask_values.values()) == {"grey matter"}


def test_ct_window_and_test_images(tmp_path, mni_small):
    img, lab, aff = mni_small
    hu = (img / img.max() * 120 - 20).astype(np.float32)
    _save(tmp_path / "imagesTr/ct.nii.gz", hu, aff)
    _save(tmp_path / "labelsTr/ct.nii.gz", lab, aff)
    _save(tmp_path / "imagesTs/t1.nii.gz", hu, aff)
    _dataset(tmp_path, ["ct"], test=["t1"], modality={"0": "CT"})
    _, items, rejects = _run(_source(tmp_path, window="brain", options={"include_test": True, "test_slices": 3}))
    assert rejects == []
    assert {it.window for it in items} == {"brain"} and {it.modality for it in items} == {"CT"}
    test_items = [it for it in items if it.source_file == "imagesTs/t1.nii.gz"]
    assert len(test_items) == 3 and all(not it.regions and not it.labels for it in test_items)
    _, items2, _ = _run(_source(tmp_path))
    assert {it.window for it in items2} == {"soft_tissue"} and all("imagesTs" not in it.source_file for it in items2)


def test_bad_inputs_are_rejected_and_good_cases_survive(tmp_path, mni_small):
    img, lab, aff = mni_small
    _save(tmp_path / "imagesTr/good.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/good.nii.gz", lab, aff)
    # truncated gzip image
    _save(tmp_path / "imagesTr/trunc.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/trunc.nii.gz", lab, aff)
    raw = (tmp_path / "imagesTr/trunc.nii.gz").read_bytes()
    (tmp_path / "imagesTr/trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    # shape mismatch
    _save(tmp_path / "imagesTr/shape.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/shape.nii.gz", lab[:-2], aff)
    # empty label
    _save(tmp_path / "imagesTr/empty.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/empty.nii.gz", np.zeros_like(lab), aff)
    # label value missing from the map
    bad = lab.copy()
    bad[lab == 2] = 7
    _save(tmp_path / "imagesTr/unknown.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/unknown.nii.gz", bad, aff)
    # NaN volume
    _save(tmp_path / "imagesTr/nan.nii.gz", np.full(img.shape, np.nan, dtype=np.float32), aff)
    _save(tmp_path / "labelsTr/nan.nii.gz", lab, aff)
    # not gzip at all
    (tmp_path / "imagesTr/junk.nii.gz").write_bytes(gzip.compress(b"this is not a nifti header"))
    _save(tmp_path / "labelsTr/junk.nii.gz", lab, aff)
    cases = ["good", "trunc", "shape", "empty", "unknown", "nan", "junk", "missing"]
    _dataset(tmp_path, cases)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["training"].append({"image": "../outside/x.nii.gz", "label": "./labelsTr/good.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    units, items, rejects = _run(_source(tmp_path, slicing={"axes": ["axial"], "per_label": 1, "min_area": 10}))
    by = {r.item: r.reason for r in rejects}
    assert len(units) == len(cases)
    assert "escapes the dataset root" in by["../outside/x.nii.gz"]
    assert "truncated or corrupt" in by["imagesTr/trunc.nii.gz"] and "trunc.nii.gz" in by["imagesTr/trunc.nii.gz"]
    assert "shape" in by["imagesTr/shape.nii.gz"] and "differ" in by["imagesTr/shape.nii.gz"]
    assert "label volume is empty" in by["imagesTr/empty.nii.gz"]
    assert "7" in by["imagesTr/unknown.nii.gz"] and "not in the label map" in by["imagesTr/unknown.nii.gz"]
    assert "NaN" in by["imagesTr/nan.nii.gz"]
    assert "junk.nii.gz" in by["imagesTr/junk.nii.gz"]
    assert "file not found" in by["imagesTr/missing.nii.gz"]
    assert {it.source_file for it in items} == {"imagesTr/good.nii.gz"}
    assert len(items) == 2  # one slice per label
    assert len(rejects) == 8


def test_bad_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    _, items, rejects = _run(_source(tmp_path))
    assert items == [] and len(rejects) == 1 and "not valid JSON" in rejects[0].reason
    with pytest.raises(Exception, match="options"):
        _source(tmp_path, options={"no_such_option": 1})


def test_4d_image_uses_the_channel_option(tmp_path):
    """nibabel's example4d.nii.gz (128 x 96 x 24 x 2, LAS, 2 x 2 x 2.2 mm) as a two-channel case."""
    import os

    from nibabel.testing import data_path

    src_img = nib.load(os.path.join(data_path, "example4d.nii.gz"))
    (tmp_path / "imagesTr").mkdir()
    nib.save(src_img, tmp_path / "imagesTr/multi.nii.gz")
    lab = np.zeros(src_img.shape[:3], dtype=np.uint8)
    lab[40:80, 30:60, 8:16] = 1
    _save(tmp_path / "labelsTr/multi.nii.gz", lab, src_img.affine)
    _dataset(tmp_path, ["multi"], labels={"0": "background", "1": "box"}, modality={"0": "FLAIR", "1": "T1w"})
    pol = {"axes": ["axial"], "per_label": 1, "min_area": 10}
    _, items0, rej0 = _run(_source(tmp_path, slicing=pol))
    _, items1, rej1 = _run(_source(tmp_path, slicing=pol, options={"channel": 1}))
    assert rej0 == rej1 == []
    assert items0[0].modality == "FLAIR" and items1[0].modality == "T1w" and items1[0].extra["channel"] == 1
    assert not np.array_equal(items0[0].array, items1[0].array)
    (r,) = items0[0].regions
    # LAS on disk -> RAS: the 40 x 30 voxel box (2 mm) stays 40 x 30 pixels on the axial slice
    assert (r.box[2] - r.box[0], r.box[3] - r.box[1]) == (40.0, 30.0)
    _, _, rej2 = _run(_source(tmp_path, slicing=pol, options={"channel": 2}))
    assert len(rej2) == 1 and "channel 2 requested but the image has 2 channel(s)" in rej2[0].reason


def test_recipe_label_map_overrides_dataset_json_value_by_value(tmp_path, mni_small):
    img, lab, aff = mni_small
    _save(tmp_path / "imagesTr/brain_001.nii.gz", img, aff)
    _save(tmp_path / "labelsTr/brain_001.nii.gz", lab, aff)
    _dataset(tmp_path, ["brain_001"])
    src = _source(tmp_path, label_map={"2": "cerebral white matter"},
                  slicing={"axes": ["axial"], "per_label": 1, "min_area": 20})
    _, items, rejects = _run(src)
    assert rejects == []
    names = {r.label for it in items for r in it.regions}
    assert names == {"grey matter", "cerebral white matter"}  # 1 from dataset.json, 2 from the recipe
