"""Recipe validation: errors name the key and the allowed values."""

from pathlib import Path

import pytest

from medvl.pipeline.recipe import RecipeError, load_recipe, parse_recipe


def _src(**kw):
    d = {"name": "s1", "format": "image_folder", "path": "data"}
    d.update(kw)
    return d


def test_valid_recipe_resolves_paths(tmp_path: Path):
    p = tmp_path / "r.yaml"
    p.write_text("sources:\n  - {name: kv, format: image_folder, path: kvasir, modality: MRI, window: Lung}\n")
    r = load_recipe(p)
    assert r.sources[0].path == str((tmp_path / "kvasir").resolve())
    assert r.sources[0].modality == "MR"  # synonym -> canonical
    assert r.sources[0].window == "lung"
    assert r.generation.zh_share == 0.3


@pytest.mark.parametrize("src, needle", [
    (_src(format="nifti_folder"), "sources[0].format: 'nifti_folder' is not a source format; allowed:"),
    (_src(modality="telepathy"), "sources[0].modality: 'telepathy' is not a known modality; allowed:"),
    (_src(department="Astrology"), "sources[0].department: 'Astrology' is not a department; allowed:"),
    (_src(window="sunny"), "sources[0].window: 'sunny' is not a window; allowed: lung"),
    (_src(options={"bogus": 1}), "options.bogus"),
    (_src(colour="red"), "sources[0].colour: Extra inputs are not permitted"),
])
def test_errors_name_key_and_allowed_values(src, needle):
    with pytest.raises(RecipeError) as e:
        parse_recipe({"sources": [src]}, origin="r.yaml")
    assert "r.yaml" in str(e.value)
    assert needle in str(e.value)


def test_kinds_exports_splits_validated():
    with pytest.raises(RecipeError, match=r"generation.kinds: 'poem' is not a sample kind; allowed: caption"):
        parse_recipe({"sources": [_src()], "generation": {"kinds": {"poem": 1}}})
    with pytest.raises(RecipeError, match=r"exports: 'csv' is not an export; allowed: llava"):
        parse_recipe({"sources": [_src()], "exports": ["csv"]})
    with pytest.raises(RecipeError, match="sum to 1"):
        parse_recipe({"sources": [_src()], "curation": {"splits": {"train": 0.9, "test": 0.3}}})
    with pytest.raises(RecipeError, match="used twice"):
        parse_recipe({"sources": [_src(), _src()]})


def test_unreadable_and_bad_yaml(tmp_path: Path):
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_example_recipe_in_the_repo_validates():
    r = load_recipe(Path(__file__).parent.parent / "examples" / "recipe.yaml")
    assert {s.format for s in r.sources} == {"image_folder", "csv_labels", "csv_boxes", "coco", "seg2d", "decathlon",
                                             "dicom"}
    assert r.export_options["parquet"]["rows_per_shard"] == 5000
