"""Offline template generator (medvl.generate): kinds, boxes, language mix, grounding, determinism."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from skimage import data as skdata

from medvl.core.records import ImageRecord, Region
from medvl.generate import GENERATORS, Generator, make_generator, missing_zh_labels
from medvl.generate.semantics import is_whole_image
from medvl.generate.template import is_no_finding, load_bank
from medvl.imaging.boxes import box_to_text, mask_to_regions
from medvl.pipeline.recipe import GenerationConfig
from medvl.taxonomy import label_zh

CJK = re.compile(r"[\u4e00-\u9fff]")
REF = re.compile(r"<ref>(.*?)</ref>")
KINDS = ("caption", "region_caption", "perception_qa", "instruction_qa", "conversation")

FUNDUS_SPACE = ["cataract", "glaucoma", "myopia", "normal"]
CXR_SPACE = ["aortic enlargement", "cardiomegaly", "nodule", "pleural effusion", "pneumothorax"]
CT_SPACE = ["bone", "soft tissue"]
NIH_SPACE = sorted(["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural thickening", "hernia",
                    "no finding"])
SPACES = {"odir": FUNDUS_SPACE, "vindr": CXR_SPACE, "ct_small": CT_SPACE, "nih": NIH_SPACE}


def _record(**kw) -> ImageRecord:
    base = dict(image="images/00/00.png", sha256="00", width=64, height=64, modality="CT", dataset="d",
                source_format="image_folder", task="cls", dimension="2d", source_file="a/b.png", patient_key="k")
    base.update(kw)
    return ImageRecord(**base)


@pytest.fixture(scope="module")
def fundus() -> ImageRecord:
    h, w = skdata.retina().shape[:2]
    return _record(image="images/aa/aa.png", sha256="aa", width=w, height=h, modality="fundus", dataset="odir",
                   task="cls", source_file="glaucoma/retina.png", labels=["glaucoma"], department="Ophthalmology",
                   body_region="eye", extra={"labels_exhaustive": True})  # an image folder: one class per image


@pytest.fixture(scope="module")
def chest() -> ImageRecord:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    w, h = int(ds.Columns), int(ds.Rows)
    return _record(image="images/bb/bb.png", sha256="bb", width=w, height=h, modality=ds.Modality, dataset="vindr",
                   task="det", source_file="train/rg1.dcm", department="Pulmonary Medicine", body_region="chest",
                   view="PA", regions=[Region("nodule", (100.0, 200.0, 300.0, 420.0)),
                                       Region("cardiomegaly", (600.0, 900.0, 1400.0, 1500.0))])


@pytest.fixture(scope="module")
def ct_slice() -> ImageRecord:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    mask = np.zeros(hu.shape, np.int16)
    mask[(hu > -100) & (hu <= 300)] = 2
    mask[hu > 300] = 1
    regions = mask_to_regions(mask, {1: "bone", 2: "soft tissue"}, min_size=20)
    assert regions
    return _record(image="images/cc/cc.png", sha256="cc", width=int(ds.Columns), height=int(ds.Rows),
                   modality="CT", dataset="ct_small", task="seg", dimension="3d", source_file="vol/ct_small.dcm",
                   regions=regions, body_region="abdomen", slice={"axis": "axial", "index": 0, "of": 1})


def _gen(**cfg) -> Generator:
    kinds = cfg.pop("kinds", {"caption": 1, "region_caption": 1, "perception_qa": 2, "instruction_qa": 2,
                              "conversation": 1})
    seed = cfg.pop("seed", 7)
    return make_generator(GenerationConfig(kinds=kinds, **cfg), seed, SPACES)


def _localized(rec: ImageRecord) -> list[Region]:
    """Regions that locate something: a box spanning >= 90% of the image's width and height does not."""
    return [r for r in rec.regions if not is_whole_image(r.box, rec.width, rec.height)]


def _answers(s) -> list[str]:
    return [t.text for t in s.turns if t.role == "assistant"]


def test_registry_and_options():
    assert "template" in GENERATORS.names()
    with pytest.raises(KeyError, match="unknown generator"):
        make_generator(GenerationConfig(generator="nonexistent"), 0, {})
    with pytest.raises(ValueError, match="max_boxes"):
        make_generator(GenerationConfig(options={"temperature": 0.2}), 0, {})


def test_counts_per_kind(fundus, chest, ct_slice):
    kinds = {"caption": 2, "region_caption": 2, "perception_qa": 3, "instruction_qa": 4, "conversation": 1}
    g = _gen(kinds=kinds)
    for rec in (fundus, chest, ct_slice):
        c = Counter(s.kind for s in g.generate(rec))
        assert c["caption"] == 2 and c["perception_qa"] == 3 and c["instruction_qa"] == 4 and c["conversation"] == 1
        # none for the classification record, and none for the CT's whole-image "soft tissue" component
        assert c["region_caption"] == 2 * len(_localized(rec))
    assert not any(s.kind == "region_caption" for s in g.generate(fundus))
    assert all(s.kind != "caption" for s in _gen(kinds={"caption": 0, "instruction_qa": 1}).generate(fundus))


def test_sample_structure(chest):
    for s in _gen().generate(chest):
        assert s.images == [chest.image] and s.record_id == chest.id and s.generator == "template"
        lang_n = s.id.removeprefix(chest.id + "#").split("#")
        assert lang_n[0] == s.kind and lang_n[1] == s.lang and lang_n[2].isdigit()
        roles = [t.role for t in s.turns]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        bank_ids = {tid for pools in load_bank(s.lang).values() for p in pools.values() for tid, _ in p}
        assert set(s.template_id.split("+")) <= bank_ids
        for key in ("modality", "department", "clinical_task", "body_region", "dataset", "source_task", "labels"):
            assert key in s.meta
        assert s.meta["source_task"] == "det" and s.meta["dataset"] == "vindr"
        assert all("<image>" not in t.text for t in s.turns)
        if s.kind == "conversation":
            assert 2 <= len(s.turns) // 2 <= 4


def test_region_caption_boxes(chest, ct_slice):
    g = _gen(kinds={"region_caption": 1}, languages=["en"])
    assert len(_localized(ct_slice)) == len(ct_slice.regions) - 1  # soft tissue spans the 128x128 slice
    for rec in (chest, ct_slice):
        samples = g.generate(rec)
        assert len(samples) == len(_localized(rec))
        for s, region in zip(samples, _localized(rec)):
            q, a = s.turns[0].text, s.turns[1].text
            assert box_to_text(region.box, rec.width, rec.height) in q
            assert a.startswith("This region")
            assert REF.findall(a) == [region.label]
    zh = _gen(kinds={"region_caption": 1}, languages=["zh"]).generate(chest)
    assert all(s.turns[1].text.startswith("该区域") for s in zh)
    assert REF.findall(zh[0].turns[1].text) == [label_zh("nodule")]


def test_perception_box_questions(chest):
    g = _gen(kinds={"perception_qa": 12}, languages=["en"])
    samples = g.generate(chest)
    types = Counter(s.meta["qa_types"][0] for s in samples)
    assert types["box2label"] and types["label2box"] and types["box_mc"]
    by_label = {r.label: r for r in chest.regions}
    for s in samples:
        q, a = s.turns[0].text, s.turns[1].text
        t = s.meta["qa_types"][0]
        if t == "label2box":
            (lab,) = REF.findall(q)
            assert box_to_text(by_label[lab].box, chest.width, chest.height) in a
            assert REF.findall(a) == [lab]
        elif t == "box2label":
            (lab,) = REF.findall(a)
            assert box_to_text(by_label[lab].box, chest.width, chest.height) in q
        elif t == "box_mc":
            assert set(s.meta["distractors"]).isdisjoint(by_label)
            assert set(s.meta["distractors"]) <= set(CXR_SPACE)
            letter_line = [ln for ln in q.splitlines() if re.match(r"^[A-D]\. ", ln)]
            correct = [ln for ln in letter_line if ln in a]
            assert len(correct) == 1 and correct[0][3:] in by_label


def test_perception_classification_mc(fundus):
    samples = _gen(kinds={"perception_qa": 6}, languages=["en"]).generate(fundus)
    types = {s.meta["qa_types"][0] for s in samples}
    assert types == {"cls", "cls_mc"}
    for s in samples:
        if s.meta["qa_types"][0] == "cls_mc":
            options = [ln[3:] for ln in s.turns[0].text.splitlines() if re.match(r"^[A-D]\. ", ln)]
            assert sorted(options) == sorted(["glaucoma", *s.meta["distractors"]])
            assert "glaucoma" in s.turns[1].text
            assert not any(d in s.turns[1].text for d in s.meta["distractors"])


def test_counting_and_yes_answers(ct_slice):
    samples = _gen(kinds={"instruction_qa": 16}, languages=["en"]).generate(ct_slice)
    seen = set()
    for s in samples:
        t = s.meta["qa_types"][0]
        seen.add(t)
        a = s.turns[1].text
        if t == "yes" and "<box>" in a:
            (lab,) = REF.findall(a)
            assert lab == "bone"  # soft tissue's only box is the whole slice: named, never located
            boxes = [list(r.box) for r in ct_slice.regions if r.label == lab]
            assert box_to_text(boxes, ct_slice.width, ct_slice.height) in a
    assert {"modality", "body_region", "view", "structures", "yes"} <= seen
    # bone fragments and soft tissue are not instances: their number of components is never stated
    assert "count" not in seen
    assert "no" not in seen and "department" not in seen  # no department in the record: never invented


def test_no_answers_only_when_labels_support_them(fundus, chest, ct_slice):
    nih = _record(modality="CR", dataset="nih", source_file="img/0001.png", labels=["effusion", "atelectasis"],
                  extra={"labels_exhaustive": True}, width=1024, height=1024)
    multi_no_flag = replace(nih, extra={})
    # a single-label row of a multi-label CSV: one label, task cls, but absence of the others is unknown
    single_row = replace(nih, source_file="img/0003.png", labels=["mass"], extra={"labels_exhaustive": False})
    fundus_no_flag = replace(fundus, extra={})
    chest_flagged = replace(chest, extra={"labels_exhaustive": True})
    legacy = replace(nih, source_file="img/0004.png", extra={"multilabel": True})  # old flag: no effect
    g = _gen(kinds={"perception_qa": 8, "instruction_qa": 16, "conversation": 6})
    cases = ((fundus, True), (nih, True), (chest_flagged, True), (chest, False), (ct_slice, False),
             (multi_no_flag, False), (single_row, False), (fundus_no_flag, False), (legacy, False))
    for rec, may_say_no in cases:
        said_no = False
        present = set(rec.labels) | {r.label for r in rec.regions}
        for s in g.generate(rec):
            negs = s.meta.get("negatives", [])
            if "no" in s.meta["qa_types"]:
                said_no = True
                assert may_say_no and negs
                assert set(negs).isdisjoint(present) and set(negs) <= set(SPACES[rec.dataset])
            else:
                assert not negs
                for a in _answers(s):
                    assert not re.match(r"^(No\b|不是|没有|未见)", a), (rec.source_file, a)
            if not may_say_no:
                assert "cls_mc" not in s.meta["qa_types"]  # wrong options would be claimed absent
        assert said_no == may_say_no, rec.source_file


def test_zh_no_answers_are_absence_style():
    nih = _record(modality="CR", dataset="nih", source_file="img/0005.png", labels=["nodule"],
                  extra={"labels_exhaustive": True}, width=1024, height=1024)
    g = _gen(kinds={"instruction_qa": 40}, languages=["zh"])
    nos = [s for s in g.generate(nih) if s.meta["qa_types"] == ["no"]]
    assert nos
    for s in nos:
        q, a = s.turns[0].text, s.turns[1].text
        assert re.match(r"^(没有|未见|不存在)", a), a
        assert "不是" not in a[:3] and not re.search(r"是\S*吗？$", q.replace("是否", "")), q
        (neg,) = s.meta["negatives"]
        assert label_zh(neg) in q


def test_no_finding_is_not_a_finding():
    rec = _record(modality="CR", dataset="nih", source_file="img/0006.png", labels=["No Finding"],
                  extra={"labels_exhaustive": True}, width=1024, height=1024)
    assert is_no_finding("No Finding") and is_no_finding("no_acute_findings") and not is_no_finding("normal")
    g = _gen(kinds={"caption": 6, "perception_qa": 10, "instruction_qa": 30, "conversation": 6})
    samples = g.generate(rec)
    no_types = 0
    for s in samples:
        assert "no finding" not in s.meta.get("negatives", [])
        for t in s.meta["qa_types"]:
            assert t != "yes"  # nothing to ask about: the only label means "no finding"
        no_types += "no" in s.meta["qa_types"]
        text = " ".join(t.text for t in s.turns)
        assert not re.search(r"shows no finding|显示(的是|了)?未见异常", text, flags=re.IGNORECASE), text
        if s.kind == "caption":
            assert any(t.startswith(f"{s.lang}.cap.nf") for t in s.template_id.split("+"))
    assert no_types  # exhaustive: other findings may be denied
    other = replace(rec, source_file="img/0007.png", labels=["mass"])
    for s in g.generate(other):
        assert "no finding" not in s.meta.get("negatives", [])
        if s.lang == "en":
            for t in s.turns:
                assert "'no finding'" not in t.text.lower()


def _mentioned(text: str, labels: list[str], lang: str) -> set[str]:
    out = set()
    for lab in labels:
        term = lab if lang == "en" else (label_zh(lab) or lab)
        pat = rf"(?<![\w-]){re.escape(term)}(?![\w-])" if lang == "en" else re.escape(term)
        if re.search(pat, text, flags=re.IGNORECASE):
            out.add(lab)
    return out


def test_answers_mention_only_supported_labels(fundus, chest, ct_slice):
    nih = _record(modality="CR", dataset="nih", source_file="img/0002.png", labels=["pneumothorax"],
                  extra={"labels_exhaustive": True}, width=1024, height=1024)
    g = _gen(kinds={"caption": 3, "region_caption": 1, "perception_qa": 8, "instruction_qa": 8, "conversation": 4})
    for rec in (fundus, chest, ct_slice, nih):
        space = SPACES[rec.dataset]
        own = set(rec.labels) | {r.label for r in rec.regions}
        for s in g.generate(rec):
            allowed = own | set(s.meta.get("negatives", []))
            for a in _answers(s):
                # longest first so "pleural effusion" is not also counted as "effusion"
                text = a
                for lab in sorted(own, key=len, reverse=True):
                    term = lab if s.lang == "en" else (label_zh(lab) or lab)
                    text = text.replace(term, " ")
                extra = _mentioned(text, space, s.lang) - allowed
                assert not extra, (s.id, a, extra)
                for r in REF.findall(a):
                    assert r in {x if s.lang == "en" else (label_zh(x) or x) for x in own}
            if "distractors" in s.meta:
                assert set(s.meta["distractors"]).isdisjoint(own)
                assert {"box_mc", "cls_mc"} & set(s.meta["qa_types"])


def test_chinese_share_and_language_switches(fundus):
    g = _gen(kinds={"caption": 1, "instruction_qa": 1}, zh_share=0.3)
    samples = []
    for i in range(1000):
        samples.extend(g.generate(replace(fundus, source_file=f"glaucoma/img{i:04d}.png")))
    assert len(samples) == 2000
    share = sum(s.lang == "zh" for s in samples) / len(samples)
    assert 0.27 <= share <= 0.33
    for s in samples[:200]:
        has_cjk = any(CJK.search(t.text) for t in s.turns)
        assert has_cjk == (s.lang == "zh")
    en_only = _gen(languages=["en"], zh_share=0.9)
    for i in range(30):
        for s in en_only.generate(replace(fundus, source_file=f"x/{i}.png")):
            assert s.lang == "en" and not any(CJK.search(t.text) for t in s.turns)
    zh_only = _gen(languages=["zh"], zh_share=0.0)
    assert all(s.lang == "zh" for s in zh_only.generate(fundus))


def test_chinese_uses_taxonomy_and_glossary(chest):
    samples = _gen(kinds={"caption": 4}, languages=["zh"]).generate(chest)
    text = " ".join(t.text for s in samples for t in s.turns)
    assert "X光" in text and label_zh("cardiomegaly") in text and "呼吸内科" in text


def test_template_bank_size_and_ids():
    en, zh = load_bank("en"), load_bank("zh")
    assert set(en) == set(KINDS) and set(zh) == set(KINDS)
    for kind in KINDS:
        assert set(en[kind]) == set(zh[kind]), kind
        for lang, bank in (("en", en), ("zh", zh)):
            ids = [tid for pool in bank[kind].values() for tid, _ in pool]
            assert len(set(ids)) == len(ids) >= 20, (lang, kind)
            assert all(tid.startswith(lang + ".") for tid in ids)
            texts = {t for pool in bank[kind].values() for _, t in pool}
            assert len(texts) >= 20
    for _, t in en["region_caption"]["answer"]:
        assert t.startswith("This region")
    for _, t in zh["region_caption"]["answer"]:
        assert t.startswith("该区域")


def test_determinism_and_variation(fundus, chest, ct_slice):
    a = [s.to_dict() for r in (fundus, chest, ct_slice) for s in _gen(seed=3).generate(r)]
    b = [s.to_dict() for r in (fundus, chest, ct_slice) for s in _gen(seed=3).generate(r)]
    assert a == b
    c = [s.to_dict() for r in (fundus, chest, ct_slice) for s in _gen(seed=4).generate(r)]
    assert a != c
    caps = _gen(kinds={"caption": 5}, languages=["en"]).generate(chest)
    assert len({s.template_id.split("+")[0] for s in caps}) == 5  # different n -> different question


def test_chinese_label_names_from_recipe_then_glossary():
    rec = _record(modality="pathology", dataset="ihc", source_file="tiles/t1.png", task="cls",
                  labels=["FHL2 high expression"], extra={"labels_exhaustive": True})
    spaces = {"ihc": ["FHL2 high expression", "FHL2 low expression"]}
    kinds = {"caption": 3, "perception_qa": 4, "instruction_qa": 6}
    plain = make_generator(GenerationConfig(kinds=kinds, languages=["zh"]), 1, spaces).generate(rec)
    text = " ".join(t.text for s in plain for t in s.turns)
    assert "FHL2高表达" in text and "high expression" not in text and "low expression" not in text
    custom = GenerationConfig(kinds=kinds, languages=["zh"], label_zh={"FHL2 High Expression": "FHL2强表达"})
    text = " ".join(t.text for s in make_generator(custom, 1, spaces).generate(rec) for t in s.turns)
    assert "FHL2强表达" in text and "FHL2高表达" not in text  # the recipe's name wins over the glossary
    for lab in ["DAB-positive region", "retinal vessels", "liver lesion", "non-ossifying fibroma", "grey matter",
                "white matter", "No Finding"]:
        assert label_zh(lab) and CJK.search(label_zh(lab)), lab
    assert label_zh("HER2 positive") == "HER2阳性"  # a marker word kept before a glossary term
    labels = ["zebra stripe artefact", "nodule", "quasar nebula", "结节", "nodule", "FHL2 low expression"]
    assert missing_zh_labels(labels) == ["quasar nebula", "zebra stripe artefact"]
    assert missing_zh_labels(labels, {"Quasar Nebula": "类星体"}) == ["zebra stripe artefact"]


# Where a label may stand in an English template: only where it reads as a name, whatever its number
# (nodule / retinal vessels) or countability (mass): after "labelled", "as", "the label/target/class", a
# colon, "lists/names/places", inside quotes, or alone.
_NAME_SLOT = re.compile(r"(labelled|labelled as|annotated as|marked as|as|the label|the target|the annotated target|"
                        r"the class|the annotated class|lists|names|places?|include|:|')\s*$", re.IGNORECASE)


def test_english_templates_use_labels_only_as_names():
    bank = load_bank("en")
    checked = 0
    for kind, pools in bank.items():
        for pool, items in pools.items():
            for tid, text in items:
                for m in re.finditer(r"\{(label|labels|ref|neg)\}", text):
                    before = text[: m.start()]
                    if not before.strip() or before.endswith("\n"):
                        continue
                    checked += 1
                    assert _NAME_SLOT.search(before), (tid, text)
    assert checked > 80


def test_english_answers_are_grammatical_for_plural_and_mass_labels():
    rec = _record(modality="fundus", dataset="ret", source_file="seg/r1.png", task="seg", width=100, height=100,
                  regions=[Region("retinal vessels", (10.0, 10.0, 60.0, 60.0)), Region("mass", (5.0, 5.0, 20.0, 20.0))])
    g = make_generator(GenerationConfig(kinds={k: 6 for k in KINDS}, languages=["en"]), 2,
                       {"ret": ["mass", "retinal vessels"]})
    for s in g.generate(rec):
        for t in s.turns:
            txt = REF.sub(r"\1", t.text)
            # "the label mass is ..." / "regions labelled mass are ..." are fine: the subject is not the label
            assert not re.search(r"(?<!label )(?<!target )(?<!class )(?<!labelled )\b(retinal vessels|mass) (is|are|was|has)\b",
                                 txt), txt
            assert not re.search(r"\b(shows|contains|is|a|an|of|where) (retinal vessels|mass)\b", txt), txt
