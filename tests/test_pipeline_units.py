"""Pipeline rules on small real-image corpora: salt required, patient units across sources, boxes that
would vanish at the written size, label exhaustiveness."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.pipeline.build import BuildError, run_build
from medvl.pipeline.recipe import parse_recipe


def _tiles(root: Path, cls: str, cases: int = 4, per_case: int = 3, offset: int = 0) -> None:
    from skimage import data

    ihc = data.immunohistochemistry()
    (root / cls).mkdir(parents=True, exist_ok=True)
    for c in range(cases):
        for k in range(per_case):
            y, x = 64 * c + offset, 64 * k + offset
            Image.fromarray(ihc[y:y + 96, x:x + 96]).save(root / cls / f"case{c:02d}_tile{k}.png")


def test_build_requires_a_salt(tmp_path: Path):
    _tiles(tmp_path / "a", "tumour")
    r = parse_recipe({"sources": [{"name": "a", "format": "image_folder", "path": str(tmp_path / "a"),
                                   "modality": "pathology"}]})
    with pytest.raises(BuildError, match="no `salt`"):
        run_build(r, tmp_path / "out")


def test_patient_pattern_and_shared_namespace_keep_cases_together(tmp_path: Path):
    _tiles(tmp_path / "a", "tumour")
    _tiles(tmp_path / "b", "stroma")
    src = {"format": "image_folder", "modality": "pathology", "patient_pattern": r"(case\d+)_",
           "patient_namespace": "cohort-1"}
    r = parse_recipe({"salt": "s", "sources": [{**src, "name": "a", "path": str(tmp_path / "a")},
                                               {**src, "name": "b", "path": str(tmp_path / "b")}],
                      "curation": {"splits": {"train": 0.5, "test": 0.5}, "dedup": False}})
    res = run_build(r, tmp_path / "out")
    by_case: dict[str, set[tuple[str, str]]] = {}
    for rec in res.records:
        case = rec.source_file.split("/")[-1][:6]
        by_case.setdefault(case, set()).add((rec.patient_key, rec.split))
    assert len(by_case) == 4
    for case, keys in by_case.items():  # one key and one split per case, across both sources
        assert len(keys) == 1, (case, keys)
    assert len({next(iter(k))[1] for k in by_case.values()}) == 2  # both splits used


def test_split_unit_image_splits_slices_of_one_volume(tmp_path: Path):
    """`split_unit: image` makes every slice its own unit (the training demo's held-out images); the default
    keeps one volume in one split."""
    from medvl.demo.corpus import write_mni_decathlon

    write_mni_decathlon(tmp_path / "corpus")
    src = {"name": "mni", "format": "decathlon", "path": str(tmp_path / "corpus" / "mni152"),
           "slicing": {"axes": ["axial"], "per_label": 6, "min_area": 200, "min_gap": 2}}
    cur = {"splits": {"train": 0.5, "test": 0.5}, "dedup": False, "near_duplicates": "report"}
    by_unit = {}
    for unit in ("patient", "image"):
        r = parse_recipe({"salt": "s", "sources": [{**src, "split_unit": unit}], "curation": cur})
        res = run_build(r, tmp_path / f"out_{unit}")
        by_unit[unit] = res.records
    assert len({rec.split for rec in by_unit["patient"]}) == 1
    images = by_unit["image"]
    assert len(images) >= 6 and {rec.split for rec in images} == {"train", "test"}
    assert len({rec.patient_key for rec in images}) == len(images)  # one unit per slice


def test_tiny_boxes_are_dropped_with_a_reason(tmp_path: Path):
    from skimage import data

    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    img = data.retina()[:1024, :1024]
    Image.fromarray(img).save(d / "images" / "r.png")
    coco = {"images": [{"id": 1, "file_name": "r.png", "width": 1024, "height": 1024}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [500, 500, 3, 3], "area": 9,
                             "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [300, 300, 200, 150], "area": 30000,
                             "iscrowd": 0}],
            "categories": [{"id": 1, "name": "optic disc"}]}
    (d / "annotations.json").write_text(json.dumps(coco))
    r = parse_recipe({"salt": "s", "image": {"max_side": 256},
                      "sources": [{"name": "c", "format": "coco", "path": str(d), "modality": "fundus",
                                   "options": {"images_dir": "images"}}]})
    res = run_build(r, tmp_path / "out")
    assert len(res.records) == 1 and len(res.records[0].regions) == 1
    tiny = [x for x in res.rejects if x.item.endswith("#box0")]
    assert tiny and "under 1%" in tiny[0].reason
    for s in res.samples:  # no degenerate box reaches the text
        for t in s.turns:
            assert "[0.49, 0.49, 0.49, 0.49]" not in t.text


def test_labels_exhaustive_follows_source_and_recipe(tmp_path: Path):
    _tiles(tmp_path / "a", "tumour", cases=1)
    _tiles(tmp_path / "a", "stroma", cases=1, offset=200)
    base = {"name": "a", "format": "image_folder", "path": str(tmp_path / "a"), "modality": "pathology"}
    res = run_build(parse_recipe({"salt": "s", "sources": [base]}), tmp_path / "o1")
    assert all(r.extra["labels_exhaustive"] is True for r in res.records)
    res = run_build(parse_recipe({"salt": "s", "sources": [{**base, "exhaustive_labels": False}]}), tmp_path / "o2")
    assert all(r.extra["labels_exhaustive"] is False for r in res.records)


def test_classes_that_cooccur_are_not_exhaustive(tmp_path: Path):
    """The same tiles filed under two tissue classes: the classes co-occur, so the folder's labels are not
    exhaustive and no "absent" (No) answer may be generated about them (before: every tile was exhaustive
    and the duplicate's class was dropped by dedup)."""
    _tiles(tmp_path / "a", "tumour", cases=1)
    _tiles(tmp_path / "a", "stroma", cases=1)  # the very same tiles
    _tiles(tmp_path / "a", "adipose", cases=1, offset=200)
    base = {"name": "a", "format": "image_folder", "path": str(tmp_path / "a"), "modality": "pathology"}
    res = run_build(parse_recipe({"salt": "s", "sources": [base]}), tmp_path / "o")
    both = [r for r in res.records if len(r.labels) == 2]
    assert len(both) == 3 and all(r.labels == ["stroma", "tumour"] for r in both)
    assert all(r.extra["labels_exhaustive"] is False for r in res.records)
    assert res.summary["curation"]["non_exhaustive_datasets"] == ["a"]
    assert any("co-occur" in w for w in res.summary["warnings"])
    for s in res.samples:
        for t in s.turns:
            assert not re.search(r"\bNo\b|不", t.text) or t.role == "user", t.text


def _dicom_corpus(root: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "DOE^JOHN"
    ds.InstitutionName = "Mercy General"
    (root / "DOE_JOHN").mkdir(parents=True)
    ds.save_as(root / "DOE_JOHN" / "ct1.dcm")
    blank = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    blank.PatientName = ""
    blank.PatientID = ""
    blank.SOPInstanceUID = blank.SOPInstanceUID + ".9"
    blank.SeriesInstanceUID = blank.SeriesInstanceUID + ".9"
    (root / "anon_of_Doe_John_at_Mercy_General").mkdir()
    blank.save_as(root / "anon_of_Doe_John_at_Mercy_General" / "ct2.dcm")


def test_dicom_build_is_identical_across_processes_and_scrubs_other_files_names(tmp_path: Path):
    """Two `medvl build` processes with different PYTHONHASHSEED give byte-identical trees; a folder named
    after a patient whose own file has a blank header is scrubbed with the values another file carries."""
    import hashlib
    import os
    import subprocess
    import sys

    import yaml

    _dicom_corpus(tmp_path / "dcm")
    rp = tmp_path / "r.yaml"
    rp.write_text(yaml.safe_dump({"salt": "s", "sources": [{"name": "d", "format": "dicom",
                                                             "path": str(tmp_path / "dcm")}]}))
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "medvl.cli.main", "build", str(rp), "-o", str(out)], check=True,
                       env=env, capture_output=True)
        trees.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1]
    text = "".join(p.read_text(encoding="utf-8", errors="ignore").lower() for p in sorted((tmp_path / "out1").rglob("*"))
                   if p.suffix in {".json", ".jsonl", ".md", ".html", ".yaml"})
    import re

    assert not re.search(r"(?<![a-z])(doe|john|mercy)(?![a-z])", text)
    assert "anon_of_redacted-" in text  # the blank-header file is still there, its folder name scrubbed


@pytest.mark.parametrize("dtype, top", [(np.uint8, 3), (np.uint16, 1000)])
def test_label_maps_round_trip_through_png(dtype, top):
    """Label maps (incl. > 255 labels) decode to exactly the written values, with either encoder."""
    import io

    from medvl.pipeline.process import _encode_label_png, encode_png

    m = (np.arange(40 * 60).reshape(40, 60) % top).astype(dtype)
    for enc in (encode_png, _encode_label_png):
        back = np.array(Image.open(io.BytesIO(enc(m))))
        assert back.dtype == dtype and np.array_equal(back, m), enc.__name__


def test_count_labels_typo_is_a_warning_and_option_errors_read_cleanly(tmp_path: Path):
    from medvl.pipeline.recipe import RecipeError

    _tiles(tmp_path / "a", "tumour", cases=1)
    base = {"name": "a", "format": "image_folder", "path": str(tmp_path / "a"), "modality": "pathology"}
    res = run_build(parse_recipe({"salt": "s", "sources": [{**base, "count_labels": ["tumuor"]}]}), tmp_path / "o")
    assert any("count_labels names 'tumuor'" in w for w in res.summary["warnings"])
    with pytest.raises(RecipeError) as e:
        parse_recipe({"salt": "s", "sources": [{**base, "modality": None,
                                                 "options": {"class_modality": {"tumour": "nonsense"}}}]})
    assert "Value error" not in str(e.value) and "class_modality" in str(e.value)
