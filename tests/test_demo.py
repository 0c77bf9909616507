"""`medvl demo OUT` (the README's main command) end to end: a real corpus, its recipe, a full build."""

import json

from click.testing import CliRunner

from medvl.cli.main import cli
from medvl.pipeline.recipe import load_recipe


def test_demo_builds_several_hundred_images_across_modalities(tmp_path):
    res = CliRunner().invoke(cli, ["demo", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "d"
    recipe = load_recipe(out / "recipe.yaml")  # the recipe it wrote is valid and names every source format
    assert {s.format for s in recipe.sources} >= {"dicom", "csv_labels", "coco", "decathlon", "image_folder", "seg2d"}
    summary = json.loads((out / "build" / "summary.json").read_text())
    assert summary["records"] >= 250
    assert len(summary["records_by_modality"]) >= 6
    assert summary["samples_by_lang"].get("zh", 0) > 0
    manifest = json.loads((out / "build" / "manifest.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert {"llava/train.json", "dataset_card.html", "records.jsonl", "rejects.jsonl"} <= paths
    # running it again without --overwrite refuses instead of mixing corpora
    again = CliRunner().invoke(cli, ["demo", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.output
