"""The scale-benchmark corpus (benchmarks/make_scale_corpus.py): its recipe loads, a build turns every image into
one record (the boxed images' two copies merged, nothing else rejected), no two images are near-duplicates by the
build's own perceptual hashes, and the corpus is the same for the same seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from build_helpers import scale_corpus_module

from medvl.curate.phash import near_duplicate_pairs
from medvl.pipeline.build import run_build
from medvl.pipeline.recipe import load_recipe



@pytest.fixture(scope="module")
def scale():
    return scale_corpus_module()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "corpus.json"}


def test_every_image_becomes_a_record(tmp_path, scale):
    corpus = tmp_path / "corpus"
    info = scale.make_corpus(corpus, images=20, volumes=1, jobs=1, box_fraction=1.0)
    assert info["images"] == 20 and info["volumes"] == 1 and info["boxed_images"] >= 1
    pngs = sorted((corpus / "nih_like").rglob("*.png"))
    assert len(pngs) == 20
    table = (corpus / "nih_like" / "Data_Entry_2017.csv").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("Image Index,Finding Labels,Follow-up #,Patient ID,")
    boxed = {line.split(",")[0] for line in
             (corpus / "nih_like" / "BBox_List_2017.csv").read_text(encoding="utf-8").splitlines()[1:]}
    assert len(boxed) == info["boxed_images"]

    recipe = load_recipe(corpus / "recipe.yaml")
    assert [s.format for s in recipe.sources] == ["csv_labels", "csv_boxes", "decathlon"]
    out = tmp_path / "out"
    run_build(recipe, out, workers=1)

    records = _jsonl(out / "records.jsonl")
    rejects = _jsonl(out / "rejects.jsonl")
    flat = [r for r in records if r["dimension"] == "2d"]
    slices = [r for r in records if r["dimension"] == "3d"]
    # each image is one record; the box list's copy of a boxed image is merged into it (the only rejects)
    assert sorted(Path(r["source_file"]).name for r in flat) == sorted(p.name for p in pngs)
    assert [r["stage"] for r in rejects] == ["dedup"] * len(boxed)
    assert sorted(Path(r["item"]).name for r in rejects) == sorted(boxed)
    merged = [r for r in flat if Path(r["source_file"]).name in boxed]
    assert all(r["regions"] and r["labels"] for r in merged)  # boxes from one table, findings from the other
    assert {r["modality"] for r in flat} <= {"fundus", "pathology"}
    assert slices and {r["modality"] for r in slices} == {"MR"}
    assert len({r["sha256"] for r in flat}) == 20
    assert near_duplicate_pairs([(r["phash"], r["dhash"]) for r in flat]) == []
    assert all(r["phash"] and r["dhash"] for r in flat)


def test_same_seed_same_corpus(tmp_path, scale):
    a = scale.make_corpus(tmp_path / "a", images=12, volumes=1, jobs=1, seed=3)
    b = scale.make_corpus(tmp_path / "b", images=12, volumes=1, jobs=2, seed=3)
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    c = scale.make_corpus(tmp_path / "c", images=12, volumes=0, jobs=1, seed=4)
    assert c["images"] == 12
    assert _tree_digest(tmp_path / "c" / "nih_like") != _tree_digest(tmp_path / "a" / "nih_like")
