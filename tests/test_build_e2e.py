"""`medvl build` end to end on a real corpus laid out by the demo module (DICOM + SEG, CSV, COCO, Decathlon,
image folder, 2D masks): determinism across runs and process pools, accounting, privacy, provenance, exports."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from medvl.cli.main import cli
from medvl.demo import corpus as demo
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import parse_recipe

IDENTIFYING = ["PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "StudyDate", "SeriesDate",
               "AcquisitionDate", "ContentDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
               "PerformingPhysicianName", "OperatorsName", "AccessionNumber", "StudyID", "StationName",
               "DeviceSerialNumber", "StudyTime", "SeriesTime"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "corpus"
    root.mkdir()
    demo.write_dicom(root)
    # a folder named after the patient, as real exports often are: the name must not reach any output
    (root / "dicom" / "mr_shoulder").rename(root / "dicom" / "CompressedSamples_MR2")
    # ... with a truncated file beside it: its reject names the folder, which must be scrubbed too
    good = (root / "dicom" / "CompressedSamples_MR2" / "MR2_UNCI.dcm").read_bytes()
    (root / "dicom" / "CompressedSamples_MR2" / "broken.dcm").write_bytes(good[:2000])
    demo.write_xray_csv(root)
    demo.write_ihc(root, tile=128, stride=128)
    demo.write_retina(root, tile=352, stride=352)
    _small_decathlon(root)
    return root


def _small_decathlon(root: Path) -> None:
    """The demo's MNI152 Decathlon set at 3 mm, to keep the test fast."""
    import nibabel as nib
    import numpy as np
    from nibabel.processing import resample_to_output

    demo.write_mni_decathlon(root)
    d = root / "mni152"
    for sub, order in (("imagesTr", 1), ("labelsTr", 0)):
        p = d / sub / "mni152_001.nii.gz"
        img = resample_to_output(nib.load(p), voxel_sizes=(3, 3, 3), order=order)
        data = img.get_fdata()
        arr = data.astype(np.float32) if order else np.rint(data).astype(np.uint8)
        nib.save(nib.Nifti1Image(arr, img.affine), p)


def _recipe(corpus: Path, workers: int = 1) -> dict:
    r = demo.demo_recipe()
    for s in r["sources"]:
        s["path"] = str(corpus / Path(s["path"]).relative_to("corpus"))
        if s["format"] == "decathlon":
            s["slicing"] = {"axes": ["axial", "coronal"], "per_label": 3, "min_area": 20, "min_gap": 2}
    r["workers"] = workers
    return r


def _tree_digest(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def build(corpus: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return run_build(parse_recipe(_recipe(corpus)), out)


def test_all_sources_produce_records(build):
    by_source = defaultdict(int)
    for r in build.records:
        by_source[r.dataset] += 1
    for name in ("dicom_studies", "xray_csv", "mni152", "ihc_tiles", "ihc_coco", "retina_seg"):
        assert by_source[name] > 0, f"{name} produced nothing; rejects: {[r for r in build.rejects if r.source == name]}"
    mods = {r.modality for r in build.records}
    assert len(mods) >= 6, mods


def test_accounting_adds_up(build):
    for name, st in build.summary["sources"].items():
        assert st["units"] == st["kept_units"] + st["rejected_units"], name
    u = build.summary["units"]
    assert u["input"] == u["kept"] + u["rejected"]
    # the README.txt junk file is listed with a reason naming it
    junk = [r for r in build.rejects if r.item.endswith("README.txt")]
    assert junk and "README.txt" in junk[0].reason
    lines = (build.out_dir / "rejects.jsonl").read_text().splitlines()
    assert len(lines) == len(build.rejects)


def test_seg_lesion_matched_and_finding_from_header(build):
    seg = [r for r in build.records if r.dataset == "dicom_studies" and r.regions]
    assert any(reg.label == "liver lesion" for r in seg for reg in r.regions)
    tib = [r for r in build.records if r.dataset == "xray_csv"]
    assert len(tib) == 1 and tib[0].labels == ["non-ossifying fibroma"] and tib[0].view == "AP"
    broken = [r for r in build.rejects if r.item.endswith("broken.dcm")]
    assert broken and broken[0].item.startswith("REDACTED-")  # the patient-named folder is scrubbed
    burned = [r for r in build.rejects if r.item.startswith("us_1/")]  # US1_UNCI.dcm: "US1" is in the name
    assert burned and burned[0].stage == "privacy" and "burned-in" in burned[0].reason


def test_deterministic_and_pool_invariant(corpus: Path, build, tmp_path: Path):
    again = run_build(parse_recipe(_recipe(corpus, workers=2)), tmp_path / "b2")
    assert _tree_digest(build.out_dir) == _tree_digest(again.out_dir)


def test_no_identifying_dicom_value_in_any_output(corpus: Path, build):
    values: set[str] = set()
    for p in sorted(corpus.rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for kw in IDENTIFYING:
            v = ds.get(kw)
            if v is None:
                continue
            for s in (v if isinstance(v, pydicom.multival.MultiValue) else [v]):
                s = str(s).strip()
                if len(s) >= 4:  # shorter values ("1", "M") occur by chance in any text
                    values.add(s)
                    if "^" in s:
                        values.update(part for part in s.split("^") if len(part) >= 4)
    assert len(values) > 10
    texts = [p.read_text(encoding="utf-8") for p in sorted(build.out_dir.rglob("*"))
             if p.is_file() and p.suffix in {".json", ".jsonl", ".md", ".html", ".yaml", ".txt"}]
    import pyarrow.parquet as pq

    for p in sorted(build.out_dir.rglob("*.parquet")):  # every column but the image bytes
        t = pq.read_table(p)
        texts.append(json.dumps(t.drop([c for c in t.column_names if c in ("image", "extra_images")]).to_pylist(),
                                ensure_ascii=False, default=str))
        texts.append(json.dumps(t.schema.metadata and {k.decode(): v.decode() for k, v in t.schema.metadata.items()}))
    low = "\n".join(texts).lower()

    def present(v: str) -> bool:  # whole-token match, so "00000" is not found inside "train-00000-of-00001"
        return re.search(r"(?<![0-9a-z])" + re.escape(v.lower()) + r"(?![0-9a-z])", low) is not None

    leaked = sorted(v for v in values if (not v.isdigit() or len(v) >= 6) and present(v))
    assert not leaked, f"identifying DICOM values in outputs: {leaked}"


def test_patients_never_cross_splits(build):
    split_of: dict[str, set[str]] = defaultdict(set)
    for r in build.records:
        split_of[r.patient_key].add(r.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert {r.split for r in build.records} == {"train", "val", "test"}


def test_provenance_and_llava_export(build):
    recs = {r.id: r for r in build.records}
    for s in build.samples:
        assert s.record_id in recs and s.id.startswith(s.record_id + "#")
    vol = next(r for r in build.records if r.dataset == "mni152")
    assert vol.id.startswith("3d#seg#mr#mni152#imagesTr#") and ("@axial" in vol.id or "@coronal" in vol.id)
    assert vol.source_file == "imagesTr/mni152_001.nii.gz" and vol.slice["axis"] in ("axial", "coronal")
    for split in ("train", "val", "test"):
        data = json.loads((build.out_dir / "llava" / f"{split}.json").read_text())
        for row in data:
            turns = row["conversations"]
            assert turns[0]["from"] == "human" and turns[0]["value"].startswith("<image>\n")
            assert sum(t["value"].count("<image>") for t in turns) == 1
            assert (build.out_dir / row["image"]).is_file()


def test_parquet_loads_with_datasets(build):
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (build.out_dir / "parquet").glob("train-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    row = ds[0]
    assert row["image"].size == (row["width"], row["height"])


def test_cli_build_refuses_existing_output_and_reports(corpus: Path, build, tmp_path: Path):
    import yaml

    rp = tmp_path / "r.yaml"
    r = _recipe(corpus)
    r["sources"] = [s for s in r["sources"] if s["name"] in ("ihc_tiles", "xray_csv")]
    rp.write_text(yaml.safe_dump(r))
    res = CliRunner().invoke(cli, ["build", str(rp), "-o", str(build.out_dir)])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = CliRunner().invoke(cli, ["build", str(rp), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "manifest.json").is_file()
