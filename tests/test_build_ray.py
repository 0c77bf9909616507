"""Issue 8: `medvl build --executor ray` gives the local executor's outputs byte for byte.

The corpus is the demo's (real pip-shipped DICOM with a SEG, a Decathlon NIfTI volume, CSV labels and boxes,
an image folder, 2D masks), so every kind of task runs on Ray workers: DICOM header indexing, reads, curation
buckets and generation chunks. Ray is started once by the module (a local Ray with num_cpus=2, as CI runs it);
the build joins that session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'medvl[ray]')")

from build_helpers import tree  # noqa: E402

from medvl.demo.corpus import layout  # noqa: E402
from medvl.pipeline.build import RunOptions, run_build  # noqa: E402
from medvl.pipeline.recipe import load_recipe  # noqa: E402

# small shards so that each stage has several tasks in flight at once
SHARDS = dict(shard_units=4, chunk_records=30, bucket_records=40)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, address="local")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    recipe = layout(root / "corpus")
    recipe["exports"] = ["llava", "messages", "parquet", "mixture", "webdataset", "card"]
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path



def test_ray_and_local_builds_are_byte_identical(recipe_path, local_ray, tmp_path):
    local = run_build(load_recipe(recipe_path), tmp_path / "local", workers=2,
                      run=RunOptions(executor="local", **SHARDS))
    on_ray = run_build(load_recipe(recipe_path), tmp_path / "ray", workers=2,
                       run=RunOptions(executor="ray", **SHARDS))
    assert ray.is_initialized(), "a build that joined a running Ray leaves it running"
    assert on_ray.summary == local.summary
    a, b = tree(tmp_path / "local"), tree(tmp_path / "ray")
    assert local.summary["samples"] > 100 and local.summary["units"]["input"] > 20
    assert any(p.endswith(".tar") for p in a), "the WebDataset export wrote shards"
    assert sorted(a) == sorted(b)
    assert [p for p in a if a[p] != b[p]] == []
    _card_webdataset_line_loads(tmp_path / "ray")


def _card_webdataset_line_loads(out: Path) -> None:
    """The card's WebDataset line, run as written from the build folder, reads every train sample."""
    import json
    import os
    import re

    import webdataset as wds

    card = (out / "dataset_card.md").read_text(encoding="utf-8")
    pattern = re.search(r'wds\.WebDataset\("([^"]+)"\)\.decode\("pil"\)', card).group(1)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    want = manifest["samples_by_format_and_split"]["webdataset-tar"]["train"]
    here = os.getcwd()
    os.chdir(out)
    try:
        got = list(wds.WebDataset(pattern, shardshuffle=False).decode("pil"))
    finally:
        os.chdir(here)
    assert len(got) == want > 0
    assert got[0]["png"].size[0] > 0 and json.loads(json.dumps(got[0]["json"]))["conversations"]
