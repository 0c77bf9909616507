"""Taxonomy vocabularies and lookups (medvl.taxonomy)."""

from __future__ import annotations

import re

import pydicom
import pytest
from pydicom.data import get_testdata_file

from medvl import taxonomy as tx

CJK = re.compile(r"[\u4e00-\u9fff]")

# GMAI-MMBench, as listed in the project reference (section 3)
DEPARTMENTS_18 = [
    "Cardiovascular Surgery", "Dermatology", "Endocrinology", "Gastroenterology & Hepatology", "General Surgery",
    "Hematology", "Infectious Diseases", "Laboratory Medicine & Pathology", "Nephrology & Hypertension",
    "Neurosurgery", "Obstetrics & Gynecology", "Oncology (Medical)", "Ophthalmology", "Orthopedic Surgery",
    "Otolaryngology (ENT) / Head & Neck Surgery", "Pulmonary Medicine", "Sports Medicine", "Urology",
]
TASKS_18 = [
    "Attribute Recognition", "Blood Vessels Recognition", "Bone", "Cell Recognition", "Counting",
    "Disease Diagnosis", "Image Quality Grading", "Microorganism Recognition", "Muscle", "Nervous Tissue",
    "Organ Recognition - Abdomen", "Organ Recognition - Head and Neck", "Organ Recognition - Pelvic",
    "Organ Recognition - Thorax", "Severity Grading", "Surgeon Action Recognition",
    "Surgical Instrument Recognition", "Surgical Workflow Recognition",
]
GMAI_VL_13 = ["CT", "MR", "endoscopy", "pathology", "X-ray", "fundus", "dermoscopy", "ultrasound", "microscopy",
              "OCT", "infrared reflectance imaging", "PET", "nuclear medicine"]
NIH_14 = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
          "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def test_modalities_cover_gmai_vl_with_names():
    for m in GMAI_VL_13:
        assert m in tx.MODALITIES
        assert tx.modality_name(m, "en")
        assert tx.modality_name(m, "zh")
    assert len(tx.GMAI_VL_MODALITIES) == 12 and set(tx.GMAI_VL_MODALITIES) < set(GMAI_VL_13)
    assert tx.modality_name("MR", "zh") == "磁共振"
    assert tx.modality_name("endoscopy", "zh") == "内镜"
    assert len(set(tx.MODALITIES)) == len(tx.MODALITIES)


@pytest.mark.parametrize("text,key", [
    ("MRI", "MR"), ("mri", "MR"), ("magnetic resonance", "MR"), ("Magnetic-Resonance Imaging", "MR"), ("T1", "MR"),
    ("T2", "MR"), ("FLAIR", "MR"), ("CR", "X-ray"), ("DX", "X-ray"), ("DR", "X-ray"), ("radiograph", "X-ray"),
    ("x ray", "X-ray"), ("xray", "X-ray"), ("X-Ray", "X-ray"), ("US", "ultrasound"), ("ultrasonography", "ultrasound"),
    ("sonography", "ultrasound"), ("PT", "PET"), ("PET/CT", "PET"), ("NM", "nuclear medicine"),
    ("SM", "pathology"), ("histopathology", "pathology"), ("WSI", "pathology"), ("optical coherence tomography", "OCT"),
    ("Fundus Photography", "fundus"), ("dermatoscopy", "dermoscopy"), ("colonoscopy", "endoscopy"), ("MG", "X-ray"),
    ("超声", "ultrasound"), ("磁共振", "MR"), ("  computed   tomography ", "CT"),
])
def test_normalize_modality_synonyms(text, key):
    assert tx.normalize_modality(text) == key


def test_normalize_modality_from_real_dicom_headers():
    for name, expected in [("CT_small.dcm", "CT"), ("RG1_UNCI.dcm", "X-ray"), ("US1_UNCI.dcm", "ultrasound"),
                           ("emri_small.dcm", "MR")]:
        ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
        assert tx.normalize_modality(ds.Modality) == expected, name


def test_unknown_values_and_bad_language():
    assert tx.normalize_modality("holography") is None
    assert tx.normalize_modality("") is None
    assert tx.normalize_modality(None) is None
    with pytest.raises(KeyError, match="allowed"):
        tx.modality_name("holography")
    with pytest.raises(ValueError, match="language"):
        tx.modality_name("CT", "fr")
    assert tx.normalize_department("Astrology") is None


def test_departments_exact_and_short_forms():
    assert tx.DEPARTMENTS == DEPARTMENTS_18
    for d in DEPARTMENTS_18:
        assert tx.normalize_department(d) == d
        assert tx.normalize_department(d.upper()) == d
        assert tx.normalize_department(d.replace("&", "and")) == d
        assert CJK.search(tx.department_name(d, "zh"))
    assert tx.normalize_department("ENT") == "Otolaryngology (ENT) / Head & Neck Surgery"
    assert tx.normalize_department("head and neck surgery") == "Otolaryngology (ENT) / Head & Neck Surgery"
    assert tx.normalize_department("ophthalmology") == "Ophthalmology"
    assert tx.normalize_department("Obstetrics and Gynecology") == "Obstetrics & Gynecology"
    assert tx.normalize_department("medical oncology") == "Oncology (Medical)"
    assert tx.normalize_department("orthopaedics") == "Orthopedic Surgery"


def test_clinical_tasks_exact():
    assert tx.CLINICAL_TASKS == TASKS_18
    for t in TASKS_18:
        assert tx.normalize_clinical_task(t) == t
        assert tx.normalize_clinical_task(t.lower()) == t
        assert CJK.search(tx.clinical_task_name(t, "zh"))
    assert tx.normalize_clinical_task("Organ Recognition (Thorax)") == "Organ Recognition - Thorax"
    assert tx.normalize_clinical_task("organ recognition head & neck") == "Organ Recognition - Head and Neck"
    assert tx.normalize_clinical_task("diagnosis") == "Disease Diagnosis"
    assert tx.normalize_clinical_task("Organ Recognition") is None  # ambiguous: which of the four?


def test_body_regions_and_views():
    for key in ["head", "brain", "neck", "chest", "breast", "abdomen", "pelvis", "spine", "upper limb", "lower limb",
                "eye", "skin", "gastrointestinal tract", "oral cavity", "whole body", "cell", "tissue"]:
        assert key in tx.BODY_REGIONS
        assert CJK.search(tx.body_region_name(key, "zh"))
    assert tx.normalize_body_region("Thorax") == "chest"
    assert tx.normalize_body_region("retina") == "eye"
    assert tx.normalize_body_region("GI tract") == "gastrointestinal tract"
    assert tx.normalize_body_region("whole-body") == "whole body"
    assert tx.normalize_view("transverse") == "axial"
    assert tx.view_name("sagittal", "zh") == "矢状位切片"


@pytest.mark.parametrize("raw,expected", [
    ("Pleural_Thickening", "pleural thickening"),
    ("  white   blood_cell ", "white blood cell"),
    ("NORMAL", "normal"),
    ("PNEUMONIA", "pneumonia"),
    ("NORM", "NORM"),
    ("CNV", "CNV"),
    ("COVID-19", "COVID-19"),
    ("No Finding", "no finding"),
    ("left--atrium", "left atrium"),
    ("- liver -", "liver"),
    ("X-ray", "X-ray"), ("T1-weighted", "T1-weighted"),
    ("Normal AMD", "normal AMD"),
    ("AKIEC", "AKIEC"),
    ("DRUSEN", "drusen"),
])
def test_normalize_label(raw, expected):
    assert tx.normalize_label(raw) == expected


def test_normalize_label_synonyms_after_normalization():
    syn = {"NORM": "normal colon mucosa", "pleural-thickening": "pleural thickening", "Effusion": "pleural effusion"}
    assert tx.normalize_label("NORM", syn) == "normal colon mucosa"
    assert tx.normalize_label("Pleural_Thickening", syn) == "pleural thickening"
    assert tx.normalize_label("EFFUSION", syn) == "pleural effusion"
    assert tx.normalize_label("Edema", syn) == "edema"
    assert tx.normalize_label("norm", syn) == "normal colon mucosa"  # case-insensitive match


def test_glossary_covers_nih_and_common_labels():
    assert tx.glossary_size() >= 200
    for f in NIH_14:
        zh = tx.label_zh(tx.normalize_label(f))
        assert zh and CJK.search(zh), f
    for lab in ["spleen", "liver", "pancreas", "hippocampus", "prostate", "left atrium", "colon cancer",
                "hepatic vessel", "lung nodule", "grey matter", "white matter", "brain", "polyp", "melanoma",
                "nevus", "fracture", "white blood cell", "tumour"]:
        assert tx.label_zh(lab), lab
    assert tx.label_zh("Pleural Thickening") == tx.label_zh("pleural thickening")
    assert tx.label_zh("polyps") == tx.label_zh("polyp")
    assert tx.label_zh("quasar nebula") is None


def test_acronyms_inside_hyphenated_words_keep_their_case():
    from medvl.taxonomy import normalize_label

    assert normalize_label("DAB-positive region") == "DAB-positive region"
    assert normalize_label("HER2-Positive") == "HER2-positive"
    assert normalize_label("Non-Ossifying Fibroma") == "non-ossifying fibroma"


def test_synonym_targets_are_normalized_like_every_label():
    """Issue 6 item 12: a target spelled as the data spells it ("Infiltration") must not become a second label
    beside the normalized "infiltration"."""
    syn = {"Infiltrate": "Infiltration", "Pleural_Thickening": "Pleural  Thickening", "NORM": "NORM"}
    assert tx.normalize_label("Infiltrate", syn) == tx.normalize_label("Infiltration") == "infiltration"
    assert tx.normalize_label("pleural thickening", syn) == "pleural thickening"
    assert tx.normalize_label("norm", syn) == "NORM"  # acronyms keep their case as a target too


@pytest.mark.parametrize("raw", ["Pleural_Thickening", "pleural-thickening", "PLEURAL THICKENING",
                                 "pleural--thickening", " Pleural thickening "])
def test_synonym_keys_ignore_case_spaces_and_punctuation(raw):
    syn = {"pleural-thickening": "pleural fibrosis"}
    assert tx.normalize_label(raw, syn) == "pleural fibrosis"
    assert tx.normalize_label("pleural effusion", syn) == "pleural effusion"


def test_conflicting_synonym_keys_are_refused_at_recipe_load():
    from medvl.pipeline.recipe import RecipeError, parse_recipe

    src = {"name": "nih", "format": "csv_labels", "path": "."}
    with pytest.raises(RecipeError, match=r"sources\[0\]\.label_synonyms: keys 'Infiltrate' and 'infiltrate' "
                                          r"match the same labels .* \('infiltration', 'consolidation'\)"):
        parse_recipe({"salt": "s", "sources": [{**src, "label_synonyms": {"Infiltrate": "Infiltration",
                                                                         "infiltrate": "Consolidation"}}]})
    with pytest.raises(RecipeError, match=r"label_synonyms: key '--': has no letters"):
        parse_recipe({"salt": "s", "sources": [{**src, "label_synonyms": {"--": "x"}}]})
    ok = parse_recipe({"salt": "s", "sources": [{**src, "label_synonyms": {"Infiltrate": "Infiltration",
                                                                          "INFILTRATE": "infiltration"}}]})
    assert ok.sources[0].label_synonyms["Infiltrate"] == "Infiltration"  # the recipe as written is kept


def test_nih_tables_with_a_synonym_give_one_label(tmp_path):
    """The README's NIH setup: Data_Entry_2017.csv says "Infiltration", BBox_List_2017.csv says "Infiltrate";
    ``label_synonyms: {Infiltrate: Infiltration}`` on the box source must give one label, not two spellings."""
    import numpy as np
    from PIL import Image

    from medvl.pipeline.process import Job, get_source, run_job
    from medvl.pipeline.recipe import ImageConfig, SourceConfig
    from medvl.sources import Unit

    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))  # a real chest radiograph (CR)
    px = ds.pixel_array.astype(np.float32)
    img = np.rint(255 * (px - px.min()) / (px.max() - px.min())).astype(np.uint8)[::4, ::4]
    (tmp_path / "images").mkdir()
    Image.fromarray(img).save(tmp_path / "images" / "00000013_005.png")
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000013_005.png,Emphysema|Infiltration|Pleural_Thickening,5,13,60,M,AP,3056,2544,0.139,0.139\n")
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000013_005.png,Infiltrate,60.5,70.2,120.4,150.8\n")
    common = {"path": str(tmp_path), "modality": "X-ray", "patient_namespace": "nih"}
    cfgs = [SourceConfig(name="nih_labels", format="csv_labels", options={"images_dir": "images"}, **common),
            SourceConfig(name="nih_boxes", format="csv_boxes", options={"images_dir": "images"},
                         label_synonyms={"Infiltrate": "Infiltration"}, **common)]
    labels: set[str] = set()
    for cfg in cfgs:
        units = [u for u in get_source(cfg).units() if isinstance(u, Unit)]
        assert len(units) == 1
        res = run_job(Job(source=cfg.model_dump(mode="json"), unit=units[0], out_dir=str(tmp_path / "out"),
                          image=ImageConfig().model_dump(mode="json"), salt="s"))
        assert len(res.records) == 1, res.rejects
        labels |= set(res.records[0].labels) | {r.label for r in res.records[0].regions}
    assert labels == {"emphysema", "infiltration", "pleural thickening"}


def test_single_letters_are_not_modalities():
    """`en_image: CT image` was added letter by letter, so "c" or "x" normalized to CT or X-ray."""
    from medvl.taxonomy import normalize_modality

    assert [c for c in "abcdefghijklmnopqrstuvwxyz" if normalize_modality(c)] == []
    assert normalize_modality("CT image") == "CT" and normalize_modality("MRI") == "MR"
