"""Benchmark loaders read each benchmark's published layout (fixtures in tests/eval_fixtures.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

import eval_fixtures as fx
from medvl.eval.benchmarks._common import strip_option_prefix
from medvl.eval.benchmarks.mmmu_med import parse_literal_list
from medvl.eval.types import BENCHMARKS, BenchmarkFormatError, EvalItem


def load(name: str, data_dir: Path, **kw):
    bench = BENCHMARKS.get(name)()
    items = bench.load(data_dir, **kw)
    return bench, items


def size(ref) -> tuple[int, int]:
    data = ref if isinstance(ref, bytes) else Path(ref).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


def test_registry_lists_every_loader_with_a_known_protocol():
    from medvl.eval.protocols import PROTOCOLS

    names = ["gmai-mmbench", "medvl", "medxpertqa", "mmmu-med", "omnimedvqa", "pathvqa", "pmc-vqa", "slake", "vqa-rad"]
    for n in names:
        cls = BENCHMARKS.get(n)
        assert cls.registry_name == n and cls.description and cls.splits
        assert cls.default_protocol in PROTOCOLS, (n, cls.default_protocol)


# ------------------------------------------------------------------------------------------ VQA-RAD

def test_vqa_rad_mevf(tmp_path):
    bench, items = load("vqa-rad", fx.write_vqa_rad(tmp_path, layout="mevf"))
    assert [it.id for it in items] == [str(r[0]) for r in fx.VQA_RAD_TEST]
    # the published answer_type decides: "ct" (an mri-or-ct question) is CLOSED although not yes/no
    assert [it.answer_type for it in items] == ["closed" if r[6] == "CLOSED" else "open" for r in fx.VQA_RAD_TEST]
    assert items[6].answer == "ct" and items[6].answer_type == "closed"
    assert items[0].groups == {"answer_type": "CLOSED", "question_type": "PRES"}
    for it, r in zip(items, fx.VQA_RAD_TEST):
        assert Path(it.images[0]).is_absolute() and size(it.images[0]) == fx.IMAGE_SIZES[r[2]]
    assert bench.skipped == [] and bench.layout == "mevf"
    _, train = load("vqa-rad", tmp_path / "data_RAD", split="train")
    assert [it.answer for it in train] == ["no", "metacarpal"]


def test_vqa_rad_parquet_has_no_type_so_closed_is_yes_no(tmp_path):
    bench, items = load("vqa-rad", fx.write_vqa_rad(tmp_path, layout="parquet"))
    assert len(items) == len(fx.VQA_RAD_TEST) and bench.layout == "parquet"
    closed = [it.answer for it in items if it.answer_type == "closed"]
    assert closed == ["yes", "no", "no"]  # "ct" is open in this copy
    assert all(isinstance(it.images[0], bytes) for it in items)
    assert [size(it.images[0]) for it in items] == [fx.IMAGE_SIZES[r[2]] for r in fx.VQA_RAD_TEST]
    assert items[0].id == "test-00000"


def test_vqa_rad_original_release_test_rows_by_phrase_type(tmp_path):
    bench, items = load("vqa-rad", fx.write_vqa_rad(tmp_path, layout="original"))
    assert [it.id for it in items] == [str(r[0]) for r in fx.VQA_RAD_TEST]  # train rows excluded
    assert items[0].answer == "Yes" and items[0].groups["organ"] == "HEAD"
    assert items[7].answer == "2"  # a JSON number becomes text
    assert items[0].meta["phrase_type"] == "test_freeform"
    assert size(items[3].images[0]) == fx.IMAGE_SIZES["ct_liver"]


# ------------------------------------------------------------------------------------------ SLAKE

@pytest.mark.parametrize("layout", ["slake1.0", "hub"])
def test_slake_layouts_and_languages(tmp_path, layout):
    d = fx.write_slake(tmp_path, layout=layout)
    bench, en = load("slake", d)
    assert bench.layout == layout and bench.skipped == []
    en_rows = [r for r in fx.SLAKE_TEST if r[4] == "en"]
    assert [it.id for it in en] == [str(r[10]) for r in en_rows]
    assert [it.answer_type for it in en] == ["closed" if r[7] == "CLOSED" else "open" for r in en_rows]
    assert en[2].answer == "Right Lung" and en[2].answer_type == "closed"  # closed but not yes/no
    assert en[0].groups == {"answer_type": "OPEN", "modality": "MRI", "content_type": "Modality",
                            "location": "Brain", "base_type": "vqa"}
    for it, r in zip(en, en_rows):
        assert size(it.images[0]) == fx.IMAGE_SIZES[r[1]]
        assert isinstance(it.images[0], bytes if layout == "hub" else str)
    _, zh = load("slake", d, lang="zh")
    assert {it.lang for it in zh} == {"zh"} and len(zh) == 4
    assert [it.answer for it in zh if it.answer_type == "closed"] == ["不包含", "是的"]
    _, both = load("slake", d, lang="all")
    assert len(both) == len(fx.SLAKE_TEST)
    _, val = load("slake", d, split="validation")
    assert [it.answer for it in val] == ["Yes"]


def test_slake_bad_record_is_skipped_and_recorded(tmp_path):
    d = fx.write_slake(tmp_path)
    recs = json.loads((d / "test.json").read_text(encoding="utf-8"))
    del recs[1]["answer"]
    recs[3]["img_name"] = "xmlab99/source.jpg"
    (d / "test.json").write_text(json.dumps(recs), encoding="utf-8")
    bench, items = load("slake", d)
    assert len(items) == 4
    assert [s[0] for s in bench.skipped] == ["12", "14"]
    assert "answer" in bench.skipped[0][1] and "xmlab99/source.jpg" in bench.skipped[1][1]


def test_slake_missing_field_names_file_and_field(tmp_path):
    d = fx.write_slake(tmp_path)
    recs = [{k: v for k, v in r.items() if k != "q_lang"} for r in json.loads((d / "test.json").read_text())]
    (d / "test.json").write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=r"test\.json.*'q_lang'.*present: 'img_id'"):
        load("slake", d)


# ------------------------------------------------------------------------------------------ PathVQA

def test_pathvqa_shards_in_order(tmp_path):
    bench, items = load("pathvqa", fx.write_pathvqa(tmp_path))
    assert [it.question for it in items] == [r[1] for r in fx.PATHVQA_TEST]
    assert [it.id for it in items] == [f"test-{k:05d}" for k in range(6)]
    assert [it.answer_type for it in items] == ["closed", "open", "closed", "closed", "open", "open"]
    assert [size(it.images[0]) for it in items] == [fx.IMAGE_SIZES[r[0]] for r in fx.PATHVQA_TEST]
    _, val = load("pathvqa", tmp_path / "path-vqa", split="validation")
    assert len(val) == 1 and val[0].answer == "no"


# ------------------------------------------------------------------------------------------ PMC-VQA

def test_pmc_vqa_v1_clean_strips_choice_prefixes_and_reads_zip(tmp_path):
    d = fx.write_pmc_vqa(tmp_path)
    bench, items = load("pmc-vqa", d)
    assert len(items) == len(fx.PMC_VQA_CLEAN) and bench.version == "v1" and bench.source_file == "test_clean.csv"
    for it, i in zip(items, fx.PMC_VQA_CLEAN):
        r = fx.PMC_VQA_ROWS[i]
        assert it.options == dict(zip("ABCD", r[4]))  # "A:" and " B:" prefixes removed
        assert it.answer == r[5] and it.answer_type == "mc"
        assert isinstance(it.images[0], bytes) and size(it.images[0]) == fx.IMAGE_SIZES[r[1]]
    assert items[1].meta["answer_text"] == "A hypoechoic lesion"
    _, full = load("pmc-vqa", d, clean=False)
    assert len(full) == len(fx.PMC_VQA_ROWS)


def test_pmc_vqa_v2_figures_folder(tmp_path):
    d = fx.write_pmc_vqa(tmp_path, version="v2", extracted=True)
    bench, items = load("pmc-vqa", d, version="v2")
    assert [it.id for it in items] == [f"test_2.csv#{k}" for k in range(4)]
    assert [it.answer for it in items] == [r[5] for r in fx.PMC_VQA_ROWS]
    assert items[0].meta["caption"] == "Axial CT of the chest."
    assert items[3].images[0].endswith("figures/PMC5123456_F1_3.jpg")
    assert size(items[3].images[0]) == fx.IMAGE_SIZES["mr_brain"]


def test_pmc_vqa_missing_column_and_bad_row(tmp_path):
    d = fx.write_pmc_vqa(tmp_path)
    text = (d / "test_clean.csv").read_text(encoding="utf-8").splitlines()
    (d / "test_clean.csv").write_text("\n".join([text[0].replace("Choice C", "Choice_C")] + text[1:]) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"test_clean\.csv.*'choice c'.*present:.*'Choice_C'"):
        load("pmc-vqa", d)
    (d / "test_clean.csv").write_text("\n".join([text[0], text[1].rsplit(",", 1)[0] + ",Z"] + text[2:]) + "\n")
    bench, items = load("pmc-vqa", d)
    assert len(items) == 2 and bench.skipped[0][0] == "test_clean.csv#0" and "'Z'" in bench.skipped[0][1]


def test_strip_option_prefix():
    assert strip_option_prefix(" B:Diffuse uptake pattern", "B") == "Diffuse uptake pattern"
    assert strip_option_prefix("A: CT", "A") == "CT"
    assert strip_option_prefix("B:12 mm", "A") == "B:12 mm"  # another letter's prefix is text


# ------------------------------------------------------------------------------------------ OmniMedVQA

def test_omnimedvqa_access_and_missing_restricted_images(tmp_path):
    d = fx.write_omnimedvqa(tmp_path)
    bench, items = load("omnimedvqa", d)
    assert [it.id for it in items] == ["ACRIMA_0000", "ACRIMA_0001", "Chest CT Scan_0000", "Chest CT Scan_0001"]
    assert [it.answer for it in items] == ["B", "B", "A", "B"]
    assert items[0].options == {"A": "No, it's normal.", "B": "Yes, glaucoma"}
    assert items[2].groups == {"dataset": "Chest CT Scan", "access": "Open-access",
                               "question_type": "Anatomy Identification", "modality": "CT(Computed Tomography)"}
    assert size(items[3].images[0]) == fx.IMAGE_SIZES["ct_liver"] and bench.skipped == []
    bench, items = load("omnimedvqa", d, access="all")
    assert len(items) == 4 and bench.missing_images == 2
    assert [s[0] for s in bench.skipped] == ["AIDA_0000", "AIDA_0001"]
    d2 = fx.write_omnimedvqa(tmp_path / "full", restricted_images=True)
    bench, items = load("omnimedvqa", d2, access="restricted")
    assert [it.answer for it in items] == ["A", "C"] and bench.missing_images == 0


# ------------------------------------------------------------------------------------------ GMAI-MMBench

@pytest.mark.parametrize("header_case", ["lower", "title"])
def test_gmai_val_back_references_and_groups(tmp_path, header_case):
    d = fx.write_gmai_mmbench(tmp_path, header_case=header_case)
    bench, items = load("gmai-mmbench", d)
    assert [it.id for it in items] == [str(r[0]) for r in fx.GMAI_ROWS] and bench.skipped == []
    assert [it.answer for it in items] == [r[4] for r in fx.GMAI_ROWS]
    assert items[1].images[0] == items[0].images[0] and items[4].images[0] == items[3].images[0]
    for it in items:
        assert size(it.images[0]) == fx.IMAGE_SIZES[fx.gmai_image_key(int(it.id))]
    assert list(items[2].options) == ["A", "B", "C", "D", "E"] and list(items[4].options) == ["A", "B"]
    assert items[3].groups == {"clinical_task": "Cell Recognition", "department": "Laboratory Medicine & Pathology",
                               "granularity": "box level", "modality": "Pathology", "category": "Cell Recognition"}


def test_gmai_test_hidden_answers_and_submission(tmp_path):
    d = fx.write_gmai_mmbench(tmp_path, split="TEST")
    bench, items = load("gmai-mmbench", d, split="TEST")
    assert [it.id for it in items] == [str(r[0]) for r in fx.GMAI_ROWS]  # parts 1, 2, 3 in order
    assert all(it.answer is None for it in items) and bench.answers_hidden
    results = [{"id": "5", "parsed": "A"}, {"id": "0", "parsed": "b"}, {"id": "1", "parsed": None}]
    path = bench.write_submission(results, tmp_path / "out")
    assert path is not None and path.is_file()
    if path.suffix == ".tsv":
        assert path.read_text(encoding="utf-8") == "index\tprediction\n0\tB\n1\t\n5\tA\n"
    val_bench, _ = load("gmai-mmbench", fx.write_gmai_mmbench(tmp_path / "v"))
    assert val_bench.write_submission(results, tmp_path / "out2") is None


def test_gmai_any_tsv_via_file_option_and_bad_reference(tmp_path):
    tsv = tmp_path / "bench" / "bench.tsv"
    rows = [fx.GMAI_ROWS[0], (7, None, "Refers to a missing row", ["x", "y"], "B", "Counting", "Oncology (Medical)",
                              "image level", "CT")]
    fx.gmai_tsv(tsv, rows, with_answer=True)
    text = tsv.read_text(encoding="utf-8").replace("\n7\t0\t", "\n7\t42\t")
    tsv.write_text(text, encoding="utf-8")
    for key in ("file", "tsv"):
        bench, items = load("gmai-mmbench", tmp_path, **{key: str(tsv)})
        assert [it.id for it in items] == ["0"]
        assert bench.skipped == [("7", f"{tsv}: row index 7 image refers to index '42', which has no image")]
    bench, items = load("gmai-mmbench", tmp_path / "bench", file="bench.tsv")  # relative to data_dir
    assert len(items) == 1


def test_gmai_missing_column(tmp_path):
    d = fx.write_gmai_mmbench(tmp_path)
    p = d / "GMAI-MMBench_VAL.tsv"
    p.write_text(p.read_text(encoding="utf-8").replace("question\t", "prompt\t", 1), encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=r"GMAI-MMBench_VAL\.tsv.*'question'.*present:.*'prompt'"):
        load("gmai-mmbench", d)


# ------------------------------------------------------------------------------------------ MMMU

def test_mmmu_med_options_literals_images_and_types(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = fx.write_mmmu_med(tmp_path, malicious=True)
    bench, items = load("mmmu-med", d)
    by = {it.id: it for it in items}
    assert list(by) == ["validation_Basic_Medical_Science_1", "validation_Basic_Medical_Science_2",
                        "validation_Clinical_Medicine_1", "validation_Diagnostics_and_Laboratory_Medicine_1",
                        "validation_Pharmacy_12", "validation_Public_Health_1"]
    two = by["validation_Basic_Medical_Science_2"]
    assert two.answer_type == "mc" and two.answer == "F" and list(two.options) == list("ABCDEF")
    assert two.options["A"] == "<image 1>" and two.meta["image_numbers"] == [1, 2]
    assert [size(b) for b in two.images] == [fx.IMAGE_SIZES["fundus"], fx.IMAGE_SIZES["microscopy"]]
    opn = by["validation_Diagnostics_and_Laboratory_Medicine_1"]
    assert opn.answer_type == "open" and opn.answer == "10" and opn.options == {}
    assert by["validation_Public_Health_1"].meta["letter_answer"] is True
    assert two.groups["subject"] == "Basic_Medical_Science" and two.groups["img_type"] == "Medical Images"
    # the malicious options string is rejected and recorded, never executed
    assert bench.skipped[0][0] == "validation_Pharmacy_99" and "options" in bench.skipped[0][1]
    assert not (tmp_path / "MMMU_PWNED").exists()
    _, test = load("mmmu-med", d, split="test", subjects=["Pharmacy"])
    assert [it.answer for it in test] == [None]


def test_parse_literal_list_never_evaluates():
    assert parse_literal_list("['H&E', \"IHC\"]") == ["H&E", "IHC"]
    assert parse_literal_list("[]") == []
    for bad in ("__import__('os')", "[open('x')]", "{'a': 1}", "[1, [2]]", "['a'"):
        with pytest.raises(ValueError):
            parse_literal_list(bad)


# ------------------------------------------------------------------------------------------ MedXpertQA

def test_medxpertqa_options_are_not_duplicated(tmp_path):
    d = fx.write_medxpertqa(tmp_path)
    bench, items = load("medxpertqa", d)
    assert [it.id for it in items] == [r[0] for r in fx.MEDXPERTQA_ROWS] and bench.skipped == []
    published = [json.loads(line) for line in (d / "MM" / "test.jsonl").read_text().splitlines()]
    for it, rec in zip(items, published):
        assert it.question == rec["question"] and it.question.count("Answer Choices:") == 1
        assert it.meta["options_in_question"] is True and it.options == rec["options"]
        assert it.answer == rec["label"]
    assert [size(p) for p in items[1].images] == [fx.IMAGE_SIZES["fundus"], fx.IMAGE_SIZES["microscopy"]]
    assert items[2].groups == {"medical_task": "Basic Science", "body_system": "Integumentary",
                               "question_type": "Understanding"}
    _, dev = load("medxpertqa", d, split="dev")
    assert [it.id for it in dev] == ["MM-1682"]


def test_medxpertqa_bad_line_and_missing_image_are_recorded(tmp_path):
    d = fx.write_medxpertqa(tmp_path)
    p = d / "MM" / "test.jsonl"
    p.write_text(p.read_text() + "{not json\n", encoding="utf-8")
    (d / "images" / "MM-300-a.jpeg").unlink()
    bench, items = load("medxpertqa", d)
    assert [it.id for it in items] == ["MM-1682", "MM-17"]
    assert [s[0] for s in bench.skipped] == ["test.jsonl:4", "MM-300"]


# ------------------------------------------------------------------------------------------ medvl build

def test_medvl_build_split(tmp_path):
    d = fx.write_medvl_build(tmp_path)
    bench, items = load("medvl", d)
    assert len(items) == 5
    assert items[0].answer == "This is a CT image." and items[0].answer_type == "open"
    assert items[0].question == "What modality is this image?"
    assert items[1].meta["has_box"] is True and "<ref>" not in items[1].answer
    mc = items[2]
    assert mc.answer_type == "mc" and mc.answer == "C" and mc.options["C"] == "Moderate"
    assert mc.question == "Which grade of diabetic retinopathy is shown?"
    assert mc.meta["question_suffix"].startswith("Answer with")
    assert (items[3].lang, items[3].answer_type, items[3].answer) == ("zh", "closed", "不是")
    assert (items[4].answer_type, items[4].answer) == ("closed", "Yes")
    assert items[0].groups["department"] == "Pulmonary Medicine"
    assert size(items[2].images[0]) == fx.IMAGE_SIZES["fundus"]
    assert [s[0] for s in bench.skipped] == ["2d#cls#CT#demo#img4#normal#d.png#caption#en#0"]
    _, train = load("medvl", d, split="train")
    assert [it.answer for it in train] == ["MR"]


# ------------------------------------------------------------------------------------------ general

def test_missing_files_name_what_is_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    for name, pattern in [("vqa-rad", "testset.json"), ("slake", "test.json"), ("pathvqa", r"test-\*\.parquet"),
                          ("pmc-vqa", "test_clean.csv"), ("omnimedvqa", "Open-access"),
                          ("gmai-mmbench", "GMAI-MMBench_VAL.tsv"), ("mmmu-med", "validation-"),
                          ("medxpertqa", "test.jsonl"), ("medvl", "samples.jsonl")]:
        with pytest.raises(BenchmarkFormatError, match=pattern):
            load(name, tmp_path / "empty")
    with pytest.raises(ValueError, match="allowed"):
        load("slake", tmp_path / "empty", split="dev")


def test_loading_is_deterministic(tmp_path):
    d = fx.write_gmai_mmbench(tmp_path)
    a = load("gmai-mmbench", d)[1]
    b = load("gmai-mmbench", d)[1]
    assert a == b and all(isinstance(it, EvalItem) for it in a)


def test_unknown_option_is_rejected(tmp_path):
    d = fx.write_slake(tmp_path)
    with pytest.raises(ValueError, match="unknown option.*langs.*allowed: lang"):
        load("slake", d, langs="zh")


def test_gmai_bad_base64_image_is_skipped(tmp_path):
    d = fx.write_gmai_mmbench(tmp_path)
    p = d / "GMAI-MMBench_VAL.tsv"
    lines = p.read_text(encoding="utf-8").split("\n")
    cells = lines[3].split("\t")  # row index 2 (a full image)
    cells[1] = "!" * 100
    lines[3] = "\t".join(cells)
    p.write_text("\n".join(lines), encoding="utf-8")
    bench, items = load("gmai-mmbench", d)
    assert [it.id for it in items] == ["0", "1", "3", "4", "5"]
    assert bench.skipped[0][0] == "2" and "base64" in bench.skipped[0][1]
