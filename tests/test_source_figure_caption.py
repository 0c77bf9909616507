"""The figure_caption source (PubMedVision's input, issue 9 part 4): the three published layouts (medvl's own,
LLaVA-Med's figure-caption and conversation files, PMC-OA's pmc_oa.jsonl) written here field for field, real
images (pydicom CT/MR rendered at >= 336 px, skimage retina and immunohistochemistry) beside a matplotlib chart
and a too small crop, the text filter, the image filter, malformed rows, and full builds whose records, rejects
and multi-image exports are checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from figure_helpers import (CHART_CAPTION, CT_CAPTION, IHC_CAPTION, MR_CAPTION, PANELS_CAPTION, RETINA_CAPTION,
                            write_images, write_jsonl)
from source_helpers import run_source

from medvl.generate.base import GENERATORS, Generator
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import parse_recipe
from medvl.sources.config import SourceConfig
from medvl.sources.figure_caption import FigureCaptionSource, caption_modality

CLASSIFIER = "figure_helpers:white_background_classifier"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("figimgs")
    write_images(folder)
    return folder


def _copy(images: Path, dest: Path, pairs: dict[str, str]) -> None:
    """Copy fixture images (name -> destination path relative to ``dest``)."""
    for src, rel in pairs.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images / src, dest / rel)


def _medvl_rows() -> list:
    return [
        {"images": ["imgs/ct.png"], "caption": CT_CAPTION, "mentions": ["CT of the chest showed a cavitating lesion "
                                                                         "(Figure 1)."],
         "pmcid": "PMC100", "figure_id": "F1"},
        {"images": ["imgs/retina.jpg", "imgs/ihc.png", "imgs/chart.png", "imgs/small.png"],
         "caption": PANELS_CAPTION, "pmcid": "PMC100", "figure_id": "F2"},
        {"image": "imgs/chart.png", "caption": CHART_CAPTION, "pmcid": "PMC200"},
        {"image": "imgs/missing.png", "caption": MR_CAPTION},
        '{"images": ["imgs/mr.jpg"], "caption": ',
        {"images": [], "caption": IHC_CAPTION},
        {"images": ["imgs/mr.jpg"], "caption": ""},
        {"images": ["imgs/small.png"], "caption": IHC_CAPTION},
        {"images": ["../outside.png"], "caption": IHC_CAPTION},
        {"images": ["imgs/mr.jpg"], "caption": MR_CAPTION, "mentions": "not a list"},
        [1, 2],
        {"images": ["imgs/mr.jpg"], "caption": MR_CAPTION, "pmcid": "PMC300", "figure_id": "F3"},
        {"images": ["imgs/mr.jpg"], "caption": RETINA_CAPTION},
    ]


@pytest.fixture()
def medvl_set(images, tmp_path) -> Path:
    root = tmp_path / "figs"
    _copy(images, root, {f: f"imgs/{f}" for f in ("ct.png", "mr.jpg", "retina.jpg", "ihc.png", "chart.png",
                                                   "small.png")})
    write_jsonl(root / "figures.jsonl", _medvl_rows())
    return root


def _source(path: Path, **options) -> FigureCaptionSource:
    options.setdefault("image_classifier", CLASSIFIER)
    return FigureCaptionSource(SourceConfig(name="figs", format="figure_caption", path=str(path), options=options))


def _by_reason(rejects, text: str):
    return [r for r in rejects if text in r.reason]


def test_medvl_layout_items_extras_and_every_reject(medvl_set):
    units, items, rejects = run_source(_source(medvl_set))
    assert [u.key for u in units] == ["imgs/ct.png", "imgs/retina.jpg", "imgs/small.png", "imgs/mr.jpg"]
    ct, panels, mr = items
    assert ct.modality == "CT" and panels.modality == "fundus" and mr.modality == "MR"
    assert ct.extra["caption"] == CT_CAPTION and ct.extra["pmcid"] == "PMC100" and ct.extra["figure_id"] == "F1"
    assert ct.extra["mentions"] == ["CT of the chest showed a cavitating lesion (Figure 1)."]
    assert ct.extra["medical_terms"] >= 5 and ct.extra["volume_key"] == "paper:PMC100"
    assert ct.more_arrays == [] and ct.array.shape == (384, 384)
    # the four-panel figure keeps the retina and the IHC slide; the chart and the small crop are image rejects
    assert panels.array.shape == (400, 400, 3) and [a.shape for a in panels.more_arrays] == [(512, 512, 3)]
    chart = [r for r in rejects if r.item == "imgs/chart.png"]
    assert len(chart) == 1 and chart[0].stage == "image_filter" and "row 2" in chart[0].reason
    assert "not a medical image (P(medical) = 0.000 < options.min_medical_prob=0.5" in chart[0].reason
    small = [r for r in rejects if r.item == "imgs/small.png"]
    assert {r.stage for r in small} == {"image_filter"}
    assert _by_reason(small, "figures.jsonl row 2: imgs/small.png: image is 300x200, smaller than "
                             "options.min_side=336")
    assert _by_reason(small, "figures.jsonl row 8: no image of the figure is left")
    # every problem row is listed with file, row and problem; nothing crashes
    expect = {
        3: ("text_filter", "figures.jsonl row 3: caption has 0 medical terms (< 5): none"),
        4: ("read", "figures.jsonl row 4: image 'imgs/missing.png': file not found (looked in imgs)"),
        5: ("validate", "figures.jsonl row 5: not valid JSON"),
        6: ("validate", "figures.jsonl row 6: 'images' must be a non-empty list of paths"),
        7: ("validate", "figures.jsonl row 7: 'caption' must be a non-empty string"),
        9: ("read", "figures.jsonl row 9: image '../outside.png': path escapes the dataset folder"),
        10: ("validate", "figures.jsonl row 10: 'mentions' must be a list of sentences, got str"),
        11: ("validate", "figures.jsonl row 11: expected a JSON object, got list"),
        13: ("validate", "figures.jsonl row 13: imgs/mr.jpg already listed in row 12"),
    }
    for n, (stage, reason) in expect.items():
        hit = [r for r in rejects if r.item == f"figures.jsonl#row{n}"]
        assert len(hit) == 1 and hit[0].stage == stage and hit[0].reason.startswith(reason), (n, hit)
    assert len(rejects) == len(expect) + 4  # + the chart, the small crop twice, the emptied figure of row 8


def test_text_filter_fields_threshold_and_vocabulary(medvl_set, tmp_path):
    write_jsonl(medvl_set / "figures.jsonl", [
        {"images": ["imgs/ct.png"], "caption": "Axial CT of the abdomen.",
         "mentions": ["The hepatocellular carcinoma invades the portal vein with thrombosis (Figure 1)."]}])
    _, items, rejects = run_source(_source(medvl_set))
    assert not items and rejects[0].stage == "text_filter"
    assert rejects[0].reason == "figures.jsonl row 1: caption has 3 medical terms (< 5): axial, ct, abdomen"
    _, items, _ = run_source(_source(medvl_set, text_fields=["caption", "mentions"]))
    assert len(items) == 1 and items[0].extra["medical_terms"] >= 5
    _, items, _ = run_source(_source(medvl_set, min_medical_terms=3))
    assert len(items) == 1 and items[0].extra["medical_terms"] == 3
    vocab = tmp_path / "terms.txt"
    vocab.write_text("# my lexicon\naxial\nabdomen\n", encoding="utf-8")
    _, items, _ = run_source(_source(medvl_set, vocabulary=str(vocab), min_medical_terms=2))
    assert items[0].extra["medical_terms"] == 2
    _, items, rejects = run_source(_source(medvl_set, vocabulary="nope.txt"))
    assert not items and len(rejects) == 1
    assert rejects[0].reason.startswith("options.vocabulary: ") and "nope.txt: vocabulary file not found" in \
        rejects[0].reason


def test_classifier_options(medvl_set):
    write_jsonl(medvl_set / "figures.jsonl", [{"images": ["imgs/chart.png"], "caption": IHC_CAPTION}])
    _, items, rejects = run_source(_source(medvl_set, image_classifier="none"))
    assert len(items) == 1 and not rejects  # no classifier: the chart stays
    _, items, rejects = run_source(_source(medvl_set, min_medical_prob=0.0))
    assert len(items) == 1
    _, items, rejects = run_source(_source(medvl_set, image_classifier="figure_helpers:no_such_function"))
    assert not items and len(rejects) == 1 and rejects[0].reason.startswith("options.image_classifier: ")
    assert "no_such_function" in rejects[0].reason


def test_llava_med_figure_caption_layout(images, tmp_path):
    root = tmp_path / "llava_med"
    _copy(images, root, {"retina.jpg": "images/24511405_fig1.jpg", "ct.png": "images/16734899_F4.jpg"})
    # llava_med_instruct_fig_captions.json: domain -> list of figure records (LLaVA-Med's published keys)
    data = {
        "chest_xray": [],
        "ct_scan": [{"pair_id": "16734899_F4", "pmid": "16734899", "fig_id": "F4", "fig_label": "Figure 4",
                     "fig_caption": CT_CAPTION,
                     "in_text_mention": [{"tokens": "Computerized tomography ( CT ) scans of the chest ( Figure 4 ) "
                                                    "were obtained ."}],
                     "domain": {"chest_xray": False, "ct_scan": True, "gross": False, "histology": False,
                                "mri": False}}],
        "gross": [{"pair_id": "24511405_fig1", "pmid": "24511405", "fig_id": "fig1", "fig_label": "Figure 1",
                   "fig_caption": RETINA_CAPTION, "in_text_mention": ["Fundus examination showed edema ( Figure 1 ) ."],
                   "domain": {"chest_xray": False, "ct_scan": False, "gross": True, "histology": False, "mri": False}},
                  {"pair_id": "99999999_F1", "pmid": "99999999", "fig_id": "F1", "fig_label": "Figure 1",
                   "fig_caption": IHC_CAPTION, "in_text_mention": []}],
    }
    (root / "llava_med_instruct_fig_captions.json").write_text(json.dumps(data), encoding="utf-8")
    units, items, rejects = run_source(_source(root))
    assert [u.key for u in units] == ["images/16734899_F4.jpg", "images/24511405_fig1.jpg"]
    ct, retina = items
    assert ct.extra["pmid"] == "16734899" and ct.extra["figure_id"] == "F4" and ct.extra["pmcid"] is None
    assert ct.extra["mentions"] == ["Computerized tomography ( CT ) scans of the chest ( Figure 4 ) were obtained ."]
    assert retina.extra["mentions"] == ["Fundus examination showed edema ( Figure 1 ) ."] and retina.modality == \
        "fundus"
    assert len(rejects) == 1 and rejects[0].item == "llava_med_instruct_fig_captions.json#row3"
    assert "image '99999999_F1.jpg': file not found (looked in ., images)" in rejects[0].reason


def test_llava_med_conversation_layout(images, tmp_path):
    root = tmp_path / "align"
    _copy(images, root, {"mr.jpg": "images/18627621_F2.jpg"})
    rows = [{"id": "18627621_F2", "image": "18627621_F2.jpg",
             "conversations": [{"from": "human", "value": "<image>\nDescribe the figure."},
                               {"from": "gpt", "value": MR_CAPTION}]},
            {"id": "1_F1", "image": "1_F1.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
            {"id": "2_F1", "image": "18627621_F2.jpg",  # llava_med_instruct_60k.json: Q&A, not a caption
             "conversations": [{"from": "human", "value": "<image>\nWhich side?"},
                               {"from": "gpt", "value": "The right side."},
                               {"from": "human", "value": "Cardiomegaly?"}, {"from": "gpt", "value": "Yes."}]}]
    (root / "llava_med_alignment_500k.json").write_text(json.dumps(rows), encoding="utf-8")
    _, items, rejects = run_source(_source(root))
    assert len(items) == 1 and items[0].extra["caption"] == MR_CAPTION and items[0].extra["pmid"] == "18627621"
    assert items[0].extra["figure_id"] == "F2" and items[0].modality == "MR"
    assert [r.reason for r in rejects] == [
        "llava_med_alignment_500k.json row 2: no 'gpt' turn with the caption in 'conversations'",
        "llava_med_alignment_500k.json row 3: a conversation of 2 answers is instruction data, not a caption (read "
        "llava_med_instruct_fig_captions.json for the captions and inline mentions)"]


def test_pmc_oa_layout(images, tmp_path):
    root = tmp_path / "pmc_oa"
    sub = "caption_T060_filtered_top4_sep_v0_subfigures"
    _copy(images, root, {"ihc.png": f"{sub}/PMC212319_Fig3_4.jpg", "chart.png": f"{sub}/PMC8253873_Fig6_46.jpg"})
    write_jsonl(root / "pmc_oa.jsonl", [
        {"image": "PMC212319_Fig3_4.jpg", "caption": IHC_CAPTION, "alignment_type": "ChatGPT_match",
         "alignment_score": 0.93},
        {"image": "PMC8253873_Fig6_46.jpg", "caption": IHC_CAPTION, "alignment_type": "ChatGPT_match",
         "alignment_score": 0.88},
        {"image": "PMC1_Fig1_0.jpg", "alignment_type": "ChatGPT_match", "alignment_score": 0.5},
    ])
    units, items, rejects = run_source(_source(root))
    assert len(items) == 1 and items[0].source_file == f"{sub}/PMC212319_Fig3_4.jpg"
    assert items[0].extra["pmcid"] == "PMC212319" and items[0].extra["figure_id"] == "Fig3"
    assert {r.stage for r in rejects} == {"image_filter", "validate"}
    assert _by_reason(rejects, "pmc_oa.jsonl row 3: 'caption' must be a non-empty string")
    # a layout forced on the wrong file names the missing key of every row
    _, items, rejects = run_source(_source(root, layout="llava_med"))
    assert not items and len(rejects) == 3
    assert all("'pair_id' must be a non-empty string" in r.reason for r in rejects)


def test_file_level_problems(tmp_path):
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "b.json").write_text("{not json", encoding="utf-8")
    _, _, rejects = run_source(_source(tmp_path))
    assert len(rejects) == 1 and "set options.file to the figure list (.jsonl or .json files found: a.jsonl, b.json)" \
        in rejects[0].reason
    _, _, rejects = run_source(_source(tmp_path, file="b.json"))
    assert [r.reason for r in rejects] == ["b.json: not valid JSON (Expecting property name enclosed in double quotes "
                                           "at line 1 column 2)"]
    _, _, rejects = run_source(_source(tmp_path / "b.json"))  # the source path may name the file itself
    assert len(rejects) == 1 and rejects[0].reason.startswith("b.json: not valid JSON")
    (tmp_path / "c.json").write_text('{"rows": 3}', encoding="utf-8")
    _, _, rejects = run_source(_source(tmp_path, file="c.json"))
    assert rejects[0].reason == "c.json: expected a JSON list of figures (or JSON Lines, one figure per line)"
    (tmp_path / "d.jsonl").write_text('{"picture": "x.png", "text": "y"}\n', encoding="utf-8")
    _, _, rejects = run_source(_source(tmp_path, file="d.jsonl"))
    assert "cannot tell the layout from the keys ['picture', 'text']" in rejects[0].reason


def test_modality_from_caption_and_recipe_override():
    assert caption_modality(CT_CAPTION) == "CT"
    assert caption_modality("A fundus photograph, and a second fundus photograph; inset: OCT.") == "fundus"
    assert caption_modality(CHART_CAPTION) is None
    with pytest.raises(ValueError, match="modality_from_caption"):
        SourceConfig(name="f", format="figure_caption", path=".", modality="CT",
                     options={"modality_from_caption": True})
    with pytest.raises(ValueError, match="'scintigram x' is not a known modality"):
        SourceConfig(name="f", format="figure_caption", path=".", options={"default_modality": "scintigram x"})


# full builds --------------------------------------------------------------------------------------------
@GENERATORS.register("test_figure_alignment")
class FigureAlignmentGenerator(Generator):
    """PubMedVision's Alignment VQA shape: one sample per figure over all of its images, answer = the caption."""

    def generate(self, record):
        s = self.make_sample(record, "caption", "en", 0, ["Describe these images.", record.extra["caption"]],
                             ["figure-alignment-test"])
        s.images = list(record.extra["images"])
        return [s]


def _recipe(images: Path, root: Path, generator: str) -> dict:
    _copy(images, root / "figs", {f: f"imgs/{f}" for f in ("ct.png", "mr.jpg", "retina.jpg", "ihc.png",
                                                            "chart.png", "small.png")})
    write_jsonl(root / "figs" / "figures.jsonl", _medvl_rows())
    sub = "caption_T060_filtered_top4_sep_v0_subfigures"
    _copy(images, root / "pmc_oa", {"ihc.png": f"images/{sub}/PMC212319_Fig3_4.jpg"})
    write_jsonl(root / "pmc_oa" / "pmc_oa.jsonl", [
        {"image": "PMC212319_Fig3_4.jpg", "caption": IHC_CAPTION, "alignment_type": "ChatGPT_match",
         "alignment_score": 0.93}])
    gen = {"generator": generator, "kinds": {"caption": 1}, "languages": ["en"]}
    return {"name": "figures", "seed": 0, "salt": "figure-salt", "workers": 1,
            "sources": [{"name": "figs", "format": "figure_caption", "path": str(root / "figs" / "figures.jsonl"),
                         "options": {"image_classifier": CLASSIFIER}},
                        {"name": "pmc_oa", "format": "figure_caption", "path": str(root / "pmc_oa"),
                         "modality": "pathology", "options": {"image_classifier": CLASSIFIER}}],
            "generation": gen, "curation": {"splits": {"train": 1.0}, "dedup": True},
            "exports": ["llava", "messages", "card"]}


@pytest.fixture(scope="module")
def template_build(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("figbuild")
    return run_build(parse_recipe(_recipe(images, root, "template")), root / "out")


def test_build_records_rejects_and_images(template_build):
    b = template_build
    recs = {r.extra["figure_id"] or r.source_file: r for r in b.records}
    assert sorted(recs) == ["F1", "F2", "F3", "Fig3"]
    panels = recs["F2"]
    assert panels.modality == "fundus" and panels.image == panels.extra["images"][0]
    assert len(panels.extra["images"]) == 2 and panels.extra["image_sizes"] == [[400, 400], [512, 512]]
    assert recs["Fig3"].modality == "pathology"  # the recipe's modality wins over the caption's
    assert recs["F1"].extra["images"] == [recs["F1"].image] and recs["F1"].extra["image_sizes"] == [[384, 384]]
    for r in b.records:  # every listed image is on disk after the build removed unused images
        assert set(r.extra) >= {"caption", "mentions", "pmcid", "figure_id", "images", "image_sizes",
                                "medical_terms"}
        for p in r.extra["images"]:
            assert (b.out_dir / p).is_file(), p
    # figures of one paper share a split
    assert recs["F1"].patient_key == panels.patient_key != recs["F3"].patient_key
    rejects = [json.loads(x) for x in (b.out_dir / "rejects.jsonl").read_text().splitlines()]
    stages = {r["stage"] for r in rejects}
    assert {"text_filter", "image_filter", "validate", "read"} <= stages
    assert any(r["stage"] == "text_filter" and r["reason"] == "figures.jsonl row 3: caption has 0 medical terms "
               "(< 5): none" for r in rejects)
    assert b.summary["units"]["input"] == b.summary["units"]["kept"] + b.summary["units"]["rejected"]
    samples = [json.loads(x) for x in (b.out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["generator"] for s in samples} == {"template"}


def test_build_exports_every_image_of_a_multi_image_sample(images, tmp_path):
    b = run_build(parse_recipe(_recipe(images, tmp_path, "test_figure_alignment")), tmp_path / "out")
    panels = next(r for r in b.records if r.extra["figure_id"] == "F2")
    llava = json.loads((b.out_dir / "llava" / "train.json").read_text())
    item = next(x for x in llava if x["id"].startswith(panels.id))
    assert item["image"] == panels.extra["images"] and len(item["image"]) == 2
    assert item["width"] == [400, 512] and item["height"] == [400, 512]
    assert item["conversations"][0]["value"].startswith("<image>\n<image>\nDescribe")
    assert item["conversations"][1]["value"] == PANELS_CAPTION
    msgs = [json.loads(x) for x in (b.out_dir / "messages" / "train.jsonl").read_text().splitlines()]
    row = next(x for x in msgs if x["id"] == item["id"])
    assert row["images"] == panels.extra["images"]
    assert row["messages"][0]["content"].count("<image>") == 2
    single = next(x for x in llava if x["id"].startswith(next(r.id for r in b.records
                                                                   if r.extra["figure_id"] == "F1")))
    assert isinstance(single["image"], str) and single["width"] == 384
