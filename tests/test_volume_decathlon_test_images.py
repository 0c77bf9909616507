"""Decathlon test images (issue 6, item 11): never skipped silently, and one count for them.

``dataset.json`` lists test images (``imagesTs/``, no labels). Without ``options.include_test`` they are not
read and the source says so in a note that the build copies into summary.json warnings; with it each gives
``options.test_slices`` slices per axis, whatever ``slicing.unlabelled`` (which counts the unlabelled slices
of labelled training volumes) says. Real images: the MNI152 template and its grey-matter map (nilearn)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nilearn import datasets

from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import SourceConfig, parse_recipe
from medvl.sources import SOURCES
from source_helpers import run_source


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A Decathlon folder: one training case and two test images (6 mm MNI152)."""
    root = tmp_path_factory.mktemp("task")
    tmpl = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2).get_fdata()[::3, ::3, ::3]
    img = tmpl.get_fdata()[::3, ::3, ::3].astype(np.float32)
    aff = tmpl.affine.copy()
    aff[:3, :3] *= 3
    for folder, name, data in (("imagesTr", "b1", img), ("labelsTr", "b1", (gm > 0.5).astype(np.uint8)),
                               ("imagesTs", "t1", img), ("imagesTs", "t2", img[::-1].copy())):
        (root / folder).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(data, aff), root / folder / f"{name}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "MNI", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "grey matter"},
        "numTraining": 1, "numTest": 2,
        "training": [{"image": "./imagesTr/b1.nii.gz", "label": "./labelsTr/b1.nii.gz"}],
        "test": ["./imagesTs/t1.nii.gz", "./imagesTs/t2.nii.gz"]}))
    return root


def _source(root, **kw):
    return SOURCES.get("decathlon")(SourceConfig(name="mni", format="decathlon", path=str(root), **kw))


def test_test_images_not_read_by_default_are_noted(task):
    src = _source(task, slicing={"axes": ["axial"], "per_label": 1, "min_area": 10})
    units, items, _ = run_source(src)
    assert [u.key for u in units] == ["imagesTr/b1.nii.gz"]
    assert all(it.source_file == "imagesTr/b1.nii.gz" for it in items)
    (note,) = src.notes
    assert note.startswith("2 test image(s) listed in dataset.json") and "were not read" in note
    assert "options.include_test: true" in note


def test_test_slices_is_the_only_count_for_test_images(task):
    """Before, slicing.unlabelled (meant for labelled volumes) replaced options.test_slices."""
    src = _source(task, slicing={"axes": ["axial", "coronal"], "per_label": 1, "min_area": 10, "unlabelled": 2},
                  options={"include_test": True, "test_slices": 3})
    _, items, rejects = run_source(src)
    assert rejects == []
    for name in ("imagesTs/t1.nii.gz", "imagesTs/t2.nii.gz"):
        got = [(it.slice["axis"]) for it in items if it.source_file == name]
        assert got == ["axial"] * 3 + ["coronal"] * 3
        assert all(not it.labels and not it.regions for it in items if it.source_file == name)
    train_unlabelled = [it for it in items if it.source_file == "imagesTr/b1.nii.gz" and not it.regions]
    assert len(train_unlabelled) == 4  # slicing.unlabelled: 2 per axis of the labelled volume
    (note,) = src.notes
    assert "options.test_slices = 3" in note and "slicing.unlabelled = 2 applies to the labelled" in note


def test_build_summary_warns_about_unread_test_images(task, tmp_path):
    recipe = parse_recipe({"name": "t", "salt": "s", "sources": [
        {"name": "mni", "format": "decathlon", "path": str(task), "department": "Neurosurgery",
         "slicing": {"axes": ["axial"], "per_label": 1, "min_area": 10}}],
        "generation": {"languages": ["en"], "kinds": {"caption": 1}}, "exports": ["llava"]})
    run_build(recipe, tmp_path / "out")
    warnings = json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"]
    assert any(w.startswith("source 'mni': 2 test image(s) listed in dataset.json") for w in warnings), warnings
