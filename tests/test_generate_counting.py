"""Honest counting and localization in generated text (issue 6, item 13): "N annotated regions" only for
labels whose regions are separate instances, per-source control with ``count_labels``, and whole-image
boxes never used as localized findings. Records are built from real images: the scikit-image fundus
photograph (vessels by a ridge filter, as the demo does) and the IHC slide (nuclei from the haematoxylin
channel, DAB stain from the DAB channel)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from skimage import color, data, filters

from medvl.core.records import ImageRecord, Region
from medvl.generate import SourceRules, make_generator
from medvl.generate.semantics import is_instance_label, is_whole_image
from medvl.imaging.boxes import box_to_text, mask_to_regions
from medvl.pipeline.recipe import GenerationConfig, RecipeError, parse_recipe

KINDS = {"caption": 2, "region_caption": 2, "perception_qa": 12, "instruction_qa": 40, "conversation": 8}
REF = re.compile(r"<ref>(.*?)</ref>")
# every way the banks state a number of regions (en: "3 annotated regions", "Count: 3"; zh: "3个...区域")
COUNT_TEXT = re.compile(r"\b\d+ annotated regions?\b|\bCount: \d+|\bmarks \d+ regions?\b|\d+个|数量：\d+")


def _record(rec_id: str, arr: np.ndarray, regions: list[Region], dataset: str, modality: str) -> ImageRecord:
    h, w = arr.shape[:2]
    return ImageRecord(image=f"images/{rec_id[:2]}/{rec_id}.png", sha256=rec_id, width=w, height=h,
                       modality=modality, dataset=dataset, source_format="seg2d", task="seg", dimension="2d",
                       source_file=f"images/{rec_id}.png", patient_key=rec_id, regions=regions)


@pytest.fixture(scope="module")
def vessels() -> ImageRecord:
    """A 320-px tile of the fundus photograph with its vessel tree (Sato ridge filter, Otsu threshold)."""
    rgb = data.retina()[480:800, 480:800]
    ves = filters.sato(rgb[..., 1] / 255.0, sigmas=[2, 4], black_ridges=True)
    mask = (ves > filters.threshold_otsu(ves)).astype(np.uint8)
    regions = mask_to_regions(mask, {1: "retinal vessels"}, min_size=64)
    assert len(regions) >= 2  # the tree falls apart into several components: fragments, not instances
    return _record("aa01", rgb, regions, "retina", "fundus")


@pytest.fixture(scope="module")
def ihc() -> ImageRecord:
    """A 256-px crop of the IHC slide: nuclei (haematoxylin components) and the DAB-positive stain, whose one
    component spans the whole crop."""
    slide = data.immunohistochemistry()
    hed = color.rgb2hed(slide)  # thresholds from the whole slide, as the demo corpus does
    nuclei = (hed[..., 0] > filters.threshold_otsu(hed[..., 0]))[:256, :256]
    dab = (hed[..., 2] > filters.threshold_otsu(hed[..., 2]))[:256, :256]
    rgb = slide[:256, :256]
    regions = (mask_to_regions(nuclei.astype(np.uint8), {1: "cell nucleus"}, min_size=30)
               + mask_to_regions(dab.astype(np.uint8), {1: "DAB-positive region"}, min_size=400))
    return _record("bb02", rgb, regions, "ihc", "pathology")


def _gen(rules: dict[str, SourceRules] | None = None, **opts):
    cfg = GenerationConfig(kinds=KINDS, languages=["en", "zh"], zh_share=0.4, options=opts)
    return make_generator(cfg, 3, {"retina": ["retinal vessels"], "ihc": ["DAB-positive region", "cell nucleus"]},
                          rules)


def _texts(samples) -> list[str]:
    return [t.text for s in samples for t in s.turns]


def _count_answers(samples) -> list[str]:
    """The assistant turns that answer a counting question."""
    out = []
    for s in samples:
        qtypes = s.meta["qa_types"]
        answers = [t.text for t in s.turns if t.role == "assistant"][-len(qtypes):]
        out += [a for t, a in zip(qtypes, answers) if t == "count"]
    return out


@pytest.mark.parametrize("label,instance", [
    ("liver lesion", True), ("lung nodule", True), ("polyps", True), ("white blood cell", True),
    ("cell nucleus", True), ("mass", True), ("tumour", True), ("Colon_Cancer", True), ("lymph nodes", True),
    ("retinal vessels", False), ("grey matter", False), ("white matter", False), ("soft tissue", False),
    ("DAB-positive region", False), ("liver", False), ("necrotic tumour core", False),
    ("peritumoral edema", False), ("effusion", False), ("cardiomegaly", False),
])
def test_instance_labels_from_the_data_file(label, instance):
    assert is_instance_label(label) is instance


def test_vessel_fragments_are_never_counted(vessels):
    samples = _gen().generate(vessels)
    assert not _count_answers(samples)
    assert not [t for t in _texts(samples) if COUNT_TEXT.search(t)]
    assert any("<box>" in t for t in _texts(samples))  # the vessels are still located, just not counted


def test_instances_are_counted_with_their_number(ihc):
    nuclei = [r for r in ihc.regions if r.label == "cell nucleus"]
    counts = _count_answers(_gen().generate(ihc))
    assert counts and len(nuclei) > 1
    for a in counts:
        assert REF.findall(a) == [REF.findall(a)[0]] and "DAB" not in a
        assert re.search(rf"(?<!\d){len(nuclei)}(?!\d)", a), a


def test_whole_image_box_is_not_a_localized_finding(ihc):
    (dab,) = [r for r in ihc.regions if r.label == "DAB-positive region"]
    assert is_whole_image(dab.box, ihc.width, ihc.height)
    whole = box_to_text(dab.box, ihc.width, ihc.height)
    assert whole == "<box>[[0.00, 0.00, 1.00, 1.00]]</box>"
    # even where the recipe declares the label countable, a component covering the image holds any number
    samples = _gen({"ihc": SourceRules(count_labels=frozenset({"DAB-positive region", "cell nucleus"}))}).generate(ihc)
    texts = _texts(samples)
    # no region caption, box question, located "yes" or caption box uses it
    assert not [t for t in texts if whole in t]
    captions = [s for s in samples if s.kind == "region_caption"]
    assert len(captions) == 2 * min(16, len(ihc.regions) - 1)  # max_regions 16, the whole box left out
    assert not [s for s in captions if "DAB" in s.turns[1].text or "阳性" in s.turns[1].text]
    types = {t for s in samples for t in s.meta["qa_types"]}
    assert {"box2label", "yes", "structures", "count"} <= types
    named = [t for t in texts if "DAB-positive region" in t or "DAB阳性区域" in t]
    assert named  # the label stays an image-level fact (captions, "structures", yes answers) without a box
    counts = _count_answers(samples)
    assert counts and all("DAB" not in a and "阳性" not in a for a in counts)


def test_whole_image_fraction_option(ihc):
    strict = _gen(whole_image_fraction=1.0)
    assert strict.is_localized(ihc, ihc.regions[0])
    with pytest.raises(ValueError, match="whole_image_fraction"):
        _gen(whole_image_fraction=1.5)


def test_count_labels_per_source(vessels, ihc):
    off = _gen({"ihc": SourceRules(count_labels="none")})
    assert not _count_answers(off.generate(ihc))
    listed = _gen({"retina": SourceRules(count_labels=frozenset({"retinal vessels"}))})
    counted = _count_answers(listed.generate(vessels))
    n = sum(r.label == "retinal vessels" and not is_whole_image(r.box, vessels.width, vessels.height)
            for r in vessels.regions)
    assert counted and all(re.search(rf"(?<!\d){n}(?!\d)", a) for a in counted)
    merged = _gen({"ihc": SourceRules(regions_are_instances=False)})  # one box per label: a box count is no count
    assert not _count_answers(merged.generate(ihc))


def test_pipeline_passes_count_labels_and_component_mode(ihc, vessels):
    """build.generate() turns each source's recipe keys into the generator's rules: count_labels normalized
    with the source's label_synonyms; options.per_component false switches counting off."""
    from dataclasses import replace

    from medvl.pipeline.build import generate

    recipe = parse_recipe({"salt": "s", "sources": [
        {"name": "retina", "format": "seg2d", "path": "/nonexistent", "count_labels": ["Retinal_Vessels"]},
        {"name": "ihc", "format": "seg2d", "path": "/nonexistent", "options": {"per_component": False}},
        {"name": "ihc2", "format": "seg2d", "path": "/nonexistent", "count_labels": ["nuclei"],
         "label_synonyms": {"Nuclei": "cell_nucleus"}},
    ], "generation": {"kinds": KINDS, "languages": ["en"]}})
    recs = [vessels, ihc, replace(ihc, dataset="ihc2", sha256="cc03", image="images/cc/cc03.png")]
    by_ds: dict[str, list] = {}
    for s in generate(recipe, recs):
        by_ds.setdefault(s.meta["dataset"], []).append(s)
    assert _count_answers(by_ds["retina"])
    assert not _count_answers(by_ds["ihc"])
    assert _count_answers(by_ds["ihc2"])


@pytest.mark.parametrize("value,msg", [("sometimes", "'sometimes' is not allowed; expected 'auto', 'none'"),
                                       (["nodule", ""], "list of non-empty label names"),
                                       (3, "expected 'auto', 'none' or a list")])
def test_count_labels_errors_name_the_key(value, msg):
    with pytest.raises(RecipeError, match=r"sources\[0\]\.count_labels: ") as e:
        parse_recipe({"salt": "s", "sources": [{"name": "a", "format": "seg2d", "path": ".", "count_labels": value}]})
    assert msg in str(e.value)


def test_count_labels_naming_no_label_are_reported():
    from medvl.generate import count_label_warnings

    rules = {"retina": SourceRules(count_labels=frozenset({"retinal vessel", "retinal vessels"})),
             "ihc": SourceRules()}
    (w,) = count_label_warnings(rules, {"retina": ["retinal vessels"], "ihc": ["cell nucleus"]})
    assert w.startswith("source 'retina': count_labels names 'retinal vessel', which no record")
