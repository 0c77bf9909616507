"""Privacy without damage, on real DICOM files: identifying attributes from DICOM PS3.15 Annex E, whole values
and real name parts redacted, clinical words and numbers left alone, no local path in any output."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvl.io.deid import element_role, identifying_values, profile_table
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import load_recipe, parse_recipe


def _outputs(out: Path) -> str:
    """Every text output of a build, concatenated (images are PNG pixels, not text; the card's embedded
    base64 plots are dropped, as random letters in them would match short values such as "NIH")."""
    parts = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".html", ".yaml", ".txt"):
            parts.append(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", p.read_text(encoding="utf-8")))
    return "\n".join(parts)


def _dicom_build(tmp_path: Path, files: dict[str, pydicom.Dataset], options: dict | None = None,
                 **source) -> tuple[object, str]:
    root = tmp_path / "dicom"
    for rel, ds in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(root / rel)
    recipe = parse_recipe({"salt": "s", "sources": [{"name": "d", "format": "dicom", "path": str(root),
                                                     "options": options or {}, **source}]})
    res = run_build(recipe, tmp_path / "out")
    return res, _outputs(tmp_path / "out")


def test_profile_table_is_the_standards():
    table = profile_table()
    assert table.edition and len(table.roles) > 500  # Table E.1-1 lists ~650 attributes
    head = Path(pydicom.__file__).parent  # noqa: F841 - the shipped file names its source
    from medvl.io.deid import TABLE

    text = TABLE.read_text(encoding="utf-8")
    assert "PS3.15 Annex E" in text and "dicom-anonymizer" in text
    ds = pydicom.Dataset()
    ds.PatientName, ds.StudyDescription, ds.PatientSex, ds.Modality = "DOE^JOHN", "Chest", "M", "CT"
    ds.ClinicalTrialSubjectID, ds.EthnicGroup = "SUBJ4711", "WHITE"
    roles = {e.keyword: element_role(e) for e in ds}
    assert roles == {"PatientName": "identifier", "StudyDescription": "text", "PatientSex": "attribute",
                     "Modality": None, "ClinicalTrialSubjectID": "identifier", "EthnicGroup": "attribute"}


def test_tcia_patient_named_after_the_organ(tmp_path):
    """pydicom-data's TCIA file: PatientName/PatientID `PANCREAS_0001`, StudyDescription `Pancreas`, in a folder
    named after the patient as TCIA downloads are. Before: the label "pancreas" became `redacted-…` and the
    source was rejected ("label contains an identifying value")."""
    ds = pydicom.dcmread(get_testdata_file("explicit_VR-UN.dcm"))
    assert str(ds.PatientName) == "PANCREAS_0001" and ds.StudyDescription == "Pancreas"
    res, text = _dicom_build(tmp_path, {"PANCREAS_0001/1-001.dcm": ds},
                             options={"label_from": "StudyDescription"}, modality="CT")
    assert len(res.records) == 1, [r.reason for r in res.rejects]
    rec = res.records[0]
    assert rec.labels == ["pancreas"] and "REDACTED" not in " ".join(rec.labels)
    assert rec.source_file.startswith("REDACTED-") and rec.source_file.endswith("/1-001.dcm")
    assert "pancreas_0001" not in text.lower() and "pancreas" in text.lower()
    assert res.summary["sources"]["d"]["redacted_strings"] >= 1
    for value in identifying_values(ds):
        assert value.lower() not in text.lower(), value


def test_numbers_in_text_survive_uid_components(tmp_path):
    """A UID with a component `125`: before, every 3+-character piece of a UID was a redaction target, so the
    label "lesion 125 mm" lost its number (or was rejected)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.125.7"
    ds.SeriesDescription = "lesion 125 mm"
    res, text = _dicom_build(tmp_path, {"ct/ct1.dcm": ds}, options={"label_from": "SeriesDescription"})
    assert [r.labels for r in res.records] == [["lesion 125 mm"]], [r.reason for r in res.rejects]
    assert "1.2.826.0.1.3680043.125.7" not in text


def test_profile_identifiers_and_private_tags_are_scrubbed_but_characteristics_are_not(tmp_path):
    """A clinical-trial subject id (Annex E, missed by the old keyword list) and an ID in a private tag name the
    folder and file; EthnicGroup WHITE must not eat "white matter"."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.ClinicalTrialSubjectID = "SUBJ4711"
    ds.EthnicGroup = "WHITE"
    ds.SeriesDescription = "white matter"
    block = ds.private_block(0x0029, "ACME_PRIVATE", create=True)
    block.add_new(0x10, "LO", "MRN00123")
    res, text = _dicom_build(tmp_path, {"SUBJ4711/MRN00123.dcm": ds},
                             options={"label_from": "SeriesDescription"})
    assert [r.labels for r in res.records] == [["white matter"]], [r.reason for r in res.rejects]
    assert "SUBJ4711" not in text and "MRN00123" not in text and "ACME" not in text
    assert str(ds.PatientName).split("^")[0].lower() not in text.lower()


def test_no_local_paths_in_any_output(tmp_path):
    """Broken files whose third-party error messages quote absolute paths, and the recipe copy: nothing in the
    outputs names a folder of this machine (before: recipe.yaml had absolute source paths and reject reasons
    quoted nibabel's and pydicom's messages with the full path)."""
    corpus = tmp_path / "my_projects" / "corpus"
    dec = corpus / "task"
    (dec / "imagesTr").mkdir(parents=True)
    (dec / "labelsTr").mkdir(parents=True)
    (dec / "imagesTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-a-volume")
    (dec / "labelsTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (dec / "dataset.json").write_text(json.dumps({
        "name": "t", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
        "training": [{"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"},
                     {"image": "./imagesTr/missing.nii.gz", "label": "./labelsTr/missing.nii.gz"}]}))
    dcm = corpus / "dicom"
    dcm.mkdir()
    good = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (dcm / "truncated.dcm").write_bytes(good[:3000])
    shutil.copy(get_testdata_file("CT_small.dcm"), dcm / "ct.dcm")
    recipe_path = tmp_path / "my_projects" / "recipe.yaml"
    recipe_path.write_text("salt: s\nsources:\n"
                           "  - {name: dec, format: decathlon, path: corpus/task}\n"
                           "  - {name: dcm, format: dicom, path: corpus/dicom}\n"
                           f"  - {{name: gone, format: image_folder, path: {tmp_path / 'nowhere'}, modality: CT}}\n")
    res = run_build(load_recipe(recipe_path), tmp_path / "out")
    assert len(res.rejects) >= 3
    text = _outputs(tmp_path / "out")
    assert str(tmp_path) not in text and "my_projects" not in text and "/tmp/" not in text
    copy = (tmp_path / "out" / "recipe.yaml").read_text()
    assert "path: corpus/task" in copy and "path: corpus/dicom" in copy and "<outside the recipe root>/nowhere" in copy
    reasons = " ".join(r.reason for r in res.rejects)
    assert "imagesTr/case_001.nii.gz" in reasons  # files are still named, relative to their source


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "US1_UNCI.dcm"])
def test_profile_values_of_real_files_never_reach_outputs(tmp_path, name):
    ds = pydicom.dcmread(get_testdata_file(name))
    res, text = _dicom_build(tmp_path, {f"{str(ds.PatientName).replace('^', '_')}/{name}": ds},
                             options={"burned_in": "keep"})
    assert res.records, [r.reason for r in res.rejects]
    for value in identifying_values(ds):
        if len(value) >= 3 and not value.replace(".", "").isdigit() or len(value.replace(".", "")) >= 5:
            assert value.lower() not in text.lower(), value
