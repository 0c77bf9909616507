"""image_folder source on a Kvasir / CRC-100K style folder tree built from real sample images."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from medvl.core.records import Reject
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES, Item


def run(root: Path, **cfg) -> tuple[list[Item], list[Reject]]:
    """units() in this process, load() on a Source re-created from a pickled config (as a worker does)."""
    config = SourceConfig(name="folder", format="image_folder", path=str(root), **cfg)
    src = SOURCES.get("image_folder")(config)
    units, rejects, items = [], [], []
    for u in src.units():
        (rejects if isinstance(u, Reject) else units).append(u)
    worker = SOURCES.get("image_folder")(pickle.loads(pickle.dumps(config)))
    for u in units:
        for out in worker.load(pickle.loads(pickle.dumps(u))):
            (items if isinstance(out, Item) else rejects).append(out)
    return items, rejects


def _tiles(img: np.ndarray, n: int, size: int) -> list[np.ndarray]:
    step = (img.shape[1] - size) // max(1, n - 1)
    return [img[:size, i * step:i * step + size] for i in range(n)]


@pytest.fixture(scope="module")
def images() -> dict[str, list[np.ndarray]]:
    retina = data.retina()[300:1100, 300:1100][::4, ::4]  # fundus crops, 200 px
    return {
        "fundus": _tiles(retina, 3, 96),
        "immunohistochemistry": _tiles(data.immunohistochemistry(), 3, 128),
        "microaneurysms": [data.microaneurysms()],
    }


def _write(folder: Path, arrays: list[np.ndarray], ext: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"img_{i:02d}{ext}")


def test_flat_layout_with_junk(tmp_path, images):
    root = tmp_path / "kvasir"
    _write(root / "fundus", images["fundus"], ".jpg")
    _write(root / "immunohistochemistry", images["immunohistochemistry"], ".tif")
    _write(root / "microaneurysms", images["microaneurysms"], ".png")
    (root / "README.txt").write_text("Kvasir-like test set\n")
    (root / "fundus" / "notes.txt").write_text("junk")
    (root / "fundus" / "labels.csv").write_text("a,b\n")
    (root / "fundus" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "immunohistochemistry" / ".ipynb_checkpoints").mkdir()
    (root / "immunohistochemistry" / ".ipynb_checkpoints" / "x.png").write_bytes(b"x")
    # truncated PNG: the first half of a real file
    Image.fromarray(images["fundus"][0]).save(root / "microaneurysms" / "cut.png")
    blob = (root / "microaneurysms" / "cut.png").read_bytes()
    (root / "microaneurysms" / "cut.png").write_bytes(blob[: len(blob) // 2])

    items, rejects = run(root, label_map={"immunohistochemistry": "DAB-stained tissue"})
    by_item = {r.item: r.reason for r in rejects}

    assert [i.source_file for i in items] == sorted(i.source_file for i in items)
    assert {i.labels[0] for i in items} == {"fundus", "DAB-stained tissue", "microaneurysms"}
    assert sum(i.labels == ["fundus"] for i in items) == 3
    for it in items:
        assert it.array.dtype == np.uint8 and it.array.ndim in (2, 3) and it.patient_raw is None
    ihc_item = next(i for i in items if i.source_file == "immunohistochemistry/img_00.tif")
    assert np.array_equal(ihc_item.array, images["immunohistochemistry"][0])

    assert "fundus/notes.txt: not an image file (.txt)" == by_item["fundus/notes.txt"]
    assert "not an image file (.csv)" in by_item["fundus/labels.csv"]
    assert "fundus/.DS_Store" in by_item["fundus/.DS_Store"] and "hidden" in by_item["fundus/.DS_Store"]
    assert "1 file inside" in by_item["immunohistochemistry/.ipynb_checkpoints"]
    assert "README.txt" in by_item["README.txt"] and "not inside a class folder" in by_item["README.txt"]
    assert "microaneurysms/cut.png" in by_item["microaneurysms/cut.png"]
    assert "truncated" in by_item["microaneurysms/cut.png"]

    # counts add up: every file on disk is an item or a reject (the hidden folder counts once)
    files = [p for p in root.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts]
    assert len(items) + len(rejects) == len(files) + 1
    assert len(items) == 7


def test_split_layout_and_exclude(tmp_path, images):
    root = tmp_path / "crc"
    _write(root / "train" / "fundus", images["fundus"][:2], ".png")
    _write(root / "train" / "immunohistochemistry", images["immunohistochemistry"][:2], ".png")
    _write(root / "test" / "fundus", images["fundus"][2:], ".png")
    _write(root / "test" / "immunohistochemistry", images["immunohistochemistry"][2:], ".png")
    items, rejects = run(root, options={"split_dirs": ["train", "test"], "exclude_classes": ["immunohistochemistry"]})
    assert [(i.source_file, i.extra["source_split"], i.labels) for i in items] == [
        ("test/fundus/img_00.png", "test", ["fundus"]),
        ("train/fundus/img_00.png", "train", ["fundus"]),
        ("train/fundus/img_01.png", "train", ["fundus"]),
    ]
    assert len(rejects) == 3 and all(r.stage == "filter" and "exclude_classes" in r.reason for r in rejects)
    assert all(r.item in r.reason for r in rejects)


def test_deterministic_and_options_checked(tmp_path, images):
    root = tmp_path / "d"
    _write(root / "fundus", images["fundus"], ".png")
    a, _ = run(root)
    b, _ = run(root)
    assert [i.source_file for i in a] == [i.source_file for i in b]
    assert all(np.array_equal(x.array, y.array) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="split_dir"):
        SourceConfig(name="x", format="image_folder", path=str(root), options={"split_dir": ["train"]})


def test_symlinked_folder_is_not_followed(tmp_path):
    """A link back up the tree (`dog/loop -> ..`) would loop and relabel cats as dogs: it is rejected."""
    import os

    import numpy as np
    from PIL import Image
    from skimage import data

    from medvl.core.records import Reject
    from medvl.pipeline.recipe import SourceConfig
    from medvl.sources import SOURCES

    ihc = data.immunohistochemistry()
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.ascontiguousarray(ihc[64 * i:64 * i + 64, :64])).save(tmp_path / cls / f"{i}.png")
    os.symlink("..", tmp_path / "dog" / "loop")
    src = SOURCES.get("image_folder")(SourceConfig(name="x", format="image_folder", path=str(tmp_path)))
    out = list(src.units())
    units = [u for u in out if not isinstance(u, Reject)]
    rejects = [u for u in out if isinstance(u, Reject)]
    assert sorted(u.key for u in units) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert len(rejects) == 1 and rejects[0].item == "dog/loop" and "symlinked folder" in rejects[0].reason


def test_symlinked_files_are_resolved_only_to_check_they_stay_inside(tmp_path):
    """Only symlinks can lead outside the root (plain entries of a folder inside it are inside): a link to an image
    outside is rejected, a link to an image inside is a unit, and units come in name order, nested folders too."""
    import os

    root = tmp_path / "data"
    ihc = data.immunohistochemistry()
    for rel in ("cat/b.png", "cat/a.png", "cat/deep/c.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(ihc[:64, :64])).save(root / rel)
    Image.fromarray(np.ascontiguousarray(ihc[64:128, :64])).save(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "cat" / "escape.png")
    os.symlink(root / "cat" / "a.png", root / "cat" / "linked.png")
    src = SOURCES.get("image_folder")(SourceConfig(name="x", format="image_folder", path=str(root)))
    out = list(src.units())
    assert [u.key for u in out if not isinstance(u, Reject)] == ["cat/a.png", "cat/b.png", "cat/deep/c.png",
                                                                 "cat/linked.png"]
    rejects = [u for u in out if isinstance(u, Reject)]
    assert [(r.item, r.reason) for r in rejects] == [
        ("cat/escape.png", "cat/escape.png: path escapes the dataset folder (symlink)")]


def _pipeline_records(root: Path, tmp_path: Path, **cfg) -> tuple[list, list]:
    """Run every unit of an image_folder source through the pipeline's per-unit stage (finalize_item)."""
    from medvl.pipeline.process import Job, get_source, run_job
    from medvl.pipeline.recipe import ImageConfig
    from medvl.sources import Unit

    config = SourceConfig(name="kvasir_like", format="image_folder", path=str(root), **cfg)
    records, rejects = [], []
    for u in get_source(config).units():
        if not isinstance(u, Unit):
            rejects.append(u)
            continue
        res = run_job(Job(source=config.model_dump(mode="json"), unit=u, out_dir=str(tmp_path / "out"),
                          image=ImageConfig().model_dump(mode="json"), salt="s"))
        records += res.records
        rejects += res.rejects
    return records, rejects


def test_class_modality_maps_modality_per_class(tmp_path, images):
    """Issue 6 item 20: one folder tree whose classes come from different modalities (Kvasir-style sets mix
    endoscopy with other images); each record takes its class's modality, normalized by the taxonomy."""
    root = tmp_path / "mixed"
    _write(root / "fundus", images["fundus"], ".png")
    _write(root / "immunohistochemistry", images["immunohistochemistry"], ".png")
    _write(root / "microaneurysms", images["microaneurysms"], ".png")
    opts = {"class_modality": {"fundus": "fundus photography", "DAB-stained tissue": "histopathology",
                               "microaneurysms": "Fundus", "polyps": "endoscopy"}}
    records, rejects = _pipeline_records(root, tmp_path, options=opts,
                                         label_map={"immunohistochemistry": "DAB-stained tissue"})
    assert not rejects
    by_label = {(r.labels[0], r.modality) for r in records}
    assert by_label == {("fundus", "fundus"), ("DAB-stained tissue", "pathology"), ("microaneurysms", "fundus")}
    assert len(records) == 7
    src = SOURCES.get("image_folder")(SourceConfig(name="k", format="image_folder", path=str(root), options=opts,
                                                   label_map={"immunohistochemistry": "DAB-stained tissue"}))
    list(src.units())
    assert src.notes == ["options.class_modality names 'polyps', which match no class folder (nor a label_map "
                         "name of one)"]


def test_class_modality_unlisted_class_is_rejected_per_file(tmp_path, images):
    root = tmp_path / "mixed"
    _write(root / "fundus", images["fundus"][:2], ".png")
    _write(root / "immunohistochemistry", images["immunohistochemistry"][:2], ".png")
    items, rejects = run(root, options={"class_modality": {"fundus": "fundus"}})
    assert [(i.source_file, i.modality) for i in items] == [("fundus/img_00.png", "fundus"),
                                                           ("fundus/img_01.png", "fundus")]
    assert sorted(r.item for r in rejects) == ["immunohistochemistry/img_00.png", "immunohistochemistry/img_01.png"]
    assert all("class 'immunohistochemistry' has no modality in options.class_modality (listed: fundus)" in r.reason
               for r in rejects)


def test_class_modality_is_checked_at_recipe_load(tmp_path):
    from medvl.pipeline.recipe import RecipeError, parse_recipe

    def recipe(**src):
        return {"salt": "s", "sources": [{"name": "k", "format": "image_folder", "path": str(tmp_path), **src}]}

    with pytest.raises(RecipeError, match=r"options\.class_modality: .*'polyps'.*'colonscopy' is not a known "
                                          r"modality; allowed: CT, MR, endoscopy"):
        parse_recipe(recipe(options={"class_modality": {"polyps": "colonscopy"}}))
    with pytest.raises(RecipeError, match=r"`modality` \('endoscopy'\) and options\.class_modality are both set"):
        parse_recipe(recipe(modality="endoscopy", options={"class_modality": {"polyps": "endoscopy"}}))
    ok = parse_recipe(recipe(options={"class_modality": {"polyps": "colonoscopy", "histology": "WSI"}}))
    src = SOURCES.get("image_folder")(ok.sources[0])
    assert src.opts.class_modality == {"polyps": "endoscopy", "histology": "pathology"}
