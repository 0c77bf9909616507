"""Display orientation, square-pixel resampling and slice selection (real NIfTI files in tmp_path)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets

from medvl.imaging.boxes import mask_to_regions
from medvl.imaging.slicing import (SlicePick, even_indices, extract_slice, group_picks, raw_slice, select_slices,
                                   slice_areas)
from medvl.io.nifti import NiftiReadError, load_label_nifti, load_nifti
from medvl.pipeline.recipe import SlicingPolicy


def test_anisotropic_sphere_stays_round(tmp_path):
    # 1 x 1 x 4 mm voxels; a sphere of radius 20 mm centred in a 64 mm cube
    shape, spacing = (64, 64, 16), (1.0, 1.0, 4.0)
    ii, jj, kk = np.meshgrid(*(np.arange(n) + 0.5 for n in shape), indexing="ij")
    r = np.sqrt((ii * 1 - 32) ** 2 + (jj * 1 - 32) ** 2 + (kk * 4 - 32) ** 2)
    label = (r <= 20).astype(np.uint8)
    path = tmp_path / "sphere.nii.gz"
    nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 4.0, 1.0])), path)
    lab, sp = load_label_nifti(path)
    assert sp == spacing
    for axis, index in (("coronal", 32), ("sagittal", 32)):
        sl = extract_slice(lab, axis, index, sp, order=0)
        assert sl.shape == (64, 64)  # 16 slices x 4 mm -> 64 rows of 1 mm
        (reg,) = mask_to_regions(sl, {1: "sphere"})
        x1, y1, x2, y2 = reg.box
        assert abs((x2 - x1) / (y2 - y1) - 1.0) < 0.1, reg.box
        assert 36 <= x2 - x1 <= 42
        unresampled = raw_slice(lab, axis, index)
        assert unresampled.shape == (16, 64)  # the squashed version we must not emit
    assert extract_slice(lab, "axial", 8, sp, order=0).shape == (64, 64)
    img = extract_slice(lab.astype(np.float32), "coronal", 32, sp, order=1)
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1


def _coord_volume(tmp_path, flip_x: bool, flip_y: bool):
    """A volume whose two channels are the world x / y coordinates, stored optionally flipped (LPS-like)."""
    shape = (20, 24, 6)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-20, -24, -9]
    if flip_x:
        aff[0, 0], aff[0, 3] = -2.0, 20 - 2
    if flip_y:
        aff[1, 1], aff[1, 3] = -2.0, 24 - 2
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    xyz = nib.affines.apply_affine(aff, ijk)
    data = np.stack([xyz[:, 0].reshape(shape), xyz[:, 1].reshape(shape)], -1).astype(np.float32)
    p = tmp_path / f"coords_{flip_x}_{flip_y}.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), p)
    return p


@pytest.mark.parametrize("flips", [(False, False), (True, True), (True, False)])
def test_axial_orientation_from_affine(tmp_path, flips):
    p = _coord_volume(tmp_path, *flips)
    x = load_nifti(p, channel=0)
    y = load_nifti(p, channel=1)
    assert x.channels == 2 and x.spacing == (2.0, 2.0, 3.0)
    ax_x = raw_slice(x.data, "axial", 3)
    ax_y = raw_slice(y.data, "axial", 3)
    assert np.all(np.diff(ax_y, axis=0) < 0)  # top row = most anterior (largest y)
    assert np.all(np.diff(ax_x, axis=1) < 0)  # left column = patient right (largest x in RAS)
    with pytest.raises(NiftiReadError, match="channel 2"):
        load_nifti(p, channel=2)


def test_mni_axial_anterior_at_top_and_coronal_superior_at_top():
    tmpl = datasets.load_mni152_template(resolution=2)
    mask_img = datasets.load_mni152_brain_mask(resolution=2)
    canon = nib.as_closest_canonical(mask_img)
    mask = canon.get_fdata() > 0.5
    spacing = canon.header.get_zooms()[:3]
    i0, j0, k0 = np.rint(nib.affines.apply_affine(np.linalg.inv(canon.affine), [0, 0, 0])).astype(int)
    # axial slice through the anterior commissure (MNI origin): the brain reaches ~70 mm in front of it
    # and ~104 mm behind it, so the AC row must sit nearer the top edge of the brain if anterior is at top
    ax = raw_slice(mask.astype(np.uint8), "axial", int(k0))
    rows = np.nonzero(ax.any(axis=1))[0]
    ac_row = ax.shape[0] - 1 - j0
    assert (ac_row - rows.min()) < (rows.max() - ac_row)
    # coronal slice through the AC: far more brain above it (~75 mm) than below (~45 mm): superior at top
    co = raw_slice(mask.astype(np.uint8), "coronal", int(j0))
    crow = np.nonzero(co.any(axis=1))[0]
    ac_crow = co.shape[0] - 1 - k0
    assert (ac_crow - crow.min()) > (crow.max() - ac_crow)
    img = extract_slice(nib.as_closest_canonical(tmpl).get_fdata(), "axial", int(k0), spacing)
    assert img.shape == ax.shape


def _policy(**kw) -> SlicingPolicy:
    return SlicingPolicy(**kw)


def test_select_slices_largest_area_gap_and_unlabelled():
    vol = np.zeros((10, 10, 30), dtype=np.int32)
    for k, (h, w) in {5: (3, 3), 6: (4, 4), 7: (5, 5), 8: (6, 6), 9: (5, 6), 20: (2, 2)}.items():
        vol[:h, :w, k] = 1
    vol[7:10, 7:10, 8] = 2
    vol[5:10, 5:10, 15] = 2
    picks = select_slices(vol, _policy(axes=["axial"], per_label=2, min_area=5, min_gap=2, unlabelled=3),
                          (1.0, 1.0, 1.0), [1, 2])
    lab1 = [p.index for p in picks if p.label_value == 1]
    assert lab1 == [6, 8]  # 8 (36) largest; 9 (30) and 7 are 1 away (< min_gap); 6 is 2 away
    areas = slice_areas(vol, "axial", 1, (1, 1, 1))
    assert areas[8] == 36 and areas[9] == 30
    lab2 = [(p.index, p.area) for p in picks if p.label_value == 2]
    assert sorted(lab2) == [(8, 9.0), (15, 25.0)]
    empty = [p.index for p in picks if p.label_value is None]
    assert len(empty) == 3 and not any(vol[:, :, i].any() for i in empty)
    assert [p.index for p in picks] == sorted(p.index for p in picks)
    groups = group_picks(picks)
    merged = [g for g in groups if g[1] == 8][0]
    assert sorted(p.label_value for p in merged[2]) == [1, 2]
    assert len(groups) == len({(p.axis, p.index) for p in picks})
    again = select_slices(vol, _policy(axes=["axial"], per_label=2, min_area=5, min_gap=2, unlabelled=3),
                          (1.0, 1.0, 1.0), [2, 1])
    assert again == picks


def test_select_slices_area_in_resampled_pixels_and_min_area():
    vol = np.zeros((8, 8, 8), dtype=np.int32)
    vol[2:5, 2:5, 4] = 1  # 9 voxels on the axial plane; 4 mm x 1 mm pixels -> 36 resampled pixels
    picks = select_slices(vol, {"axes": ["axial"], "per_label": 1, "min_area": 30}, (4.0, 1.0, 1.0), [1])
    assert picks == [SlicePick("axial", 4, 1, 36.0)]
    assert select_slices(vol, {"axes": ["axial"], "per_label": 1, "min_area": 37}, (4.0, 1.0, 1.0), [1]) == []


def test_even_indices():
    assert even_indices(range(100), 3) == [25, 50, 74]  # linspace(0, 99, 5)[1:-1], rounded half-up
    assert even_indices([3, 4], 5) == [3, 4]
    assert even_indices([], 2) == []
