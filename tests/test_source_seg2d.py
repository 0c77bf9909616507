"""seg2d source on ISIC / Kvasir-SEG style image + mask folders. Masks are real segmentations of the images:
DAB-positive (brown) stain of an IHC slide via colour deconvolution (rgb2hed), and retinal vessels of a
fundus photo via a black top-hat of the green channel."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data
from skimage.color import rgb2hed
from skimage.morphology import black_tophat, disk

from medvl.core.records import Reject
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES, Item

DAB = {"0": "background", "1": "DAB-positive region"}


def run(root: Path, **cfg) -> tuple[list[Item], list[Reject]]:
    config = SourceConfig(name="seg", format="seg2d", path=str(root), **cfg)
    src = SOURCES.get("seg2d")(config)
    units, rejects, items = [], [], []
    for u in src.units():
        (rejects if isinstance(u, Reject) else units).append(u)
    worker = SOURCES.get("seg2d")(pickle.loads(pickle.dumps(config)))
    for u in units:
        for out in worker.load(pickle.loads(pickle.dumps(u))):
            (items if isinstance(out, Item) else rejects).append(out)
    return items, rejects


@pytest.fixture(scope="module")
def ihc_tiles() -> list[tuple[np.ndarray, np.ndarray]]:
    """Four 128 px IHC tiles with their DAB-positive masks stored ISIC-style as 0/255."""
    img = data.immunohistochemistry()
    dab = ndimage.gaussian_filter(rgb2hed(img)[..., 2], 1.5)
    positive = dab > np.percentile(dab, 90)
    tiles = []
    for i, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        tile, m = img[y:y + 128, x:x + 128].copy(), positive[y:y + 128, x:x + 128]
        assert m.any(), f"tile {i} has no DAB signal"
        tiles.append((tile, (m * 255).astype(np.uint8)))
    return tiles


def _isic(root: Path, tiles) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, (tile, mask) in enumerate(tiles):
        Image.fromarray(tile).save(root / "images" / f"ISIC_{i:07d}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"ISIC_{i:07d}_segmentation.png")


def test_isic_layout_with_problems(tmp_path, ihc_tiles):
    root = tmp_path / "isic"
    _isic(root, ihc_tiles)
    # size mismatch, empty mask, image without mask, mask without image, truncated image, junk file
    Image.fromarray(ihc_tiles[2][1][:100]).save(root / "masks" / "ISIC_0000002_segmentation.png")
    Image.fromarray(np.zeros((128, 128), np.uint8)).save(root / "masks" / "ISIC_0000003_segmentation.png")
    Image.fromarray(ihc_tiles[0][0]).save(root / "images" / "ISIC_0000010.jpg")
    Image.fromarray(ihc_tiles[1][1]).save(root / "masks" / "ISIC_0000011_segmentation.png")
    Image.fromarray(ihc_tiles[1][0]).save(root / "images" / "ISIC_0000012.png")
    Image.fromarray(ihc_tiles[1][1]).save(root / "masks" / "ISIC_0000012_segmentation.png")
    blob = (root / "images" / "ISIC_0000012.png").read_bytes()
    (root / "images" / "ISIC_0000012.png").write_bytes(blob[: len(blob) // 3])
    (root / "images" / "README.txt").write_text("ISIC 2018 task 1 sample\n")

    opts = {"mask_suffix": "_segmentation", "mask_ext": ".png", "binary_threshold": 128}
    items, rejects = run(root, label_map=DAB, options=opts)
    assert [i.source_file for i in items] == ["images/ISIC_0000000.jpg", "images/ISIC_0000001.jpg"]
    for it, (tile, mask) in zip(items, ihc_tiles):
        assert it.labels == ["DAB-positive region"] and it.mask_values == {1: "DAB-positive region"}
        assert it.mask.dtype == np.uint8 and np.array_equal(it.mask, (mask >= 128).astype(np.uint8))
        assert it.array.shape == tile.shape
        assert it.regions and all(r.area >= 16 and r.source == "mask" for r in it.regions)
        # each box holds its component: union of boxes covers every kept mask pixel
        covered = np.zeros(mask.shape, bool)
        for r in it.regions:
            x1, y1, x2, y2 = (int(v) for v in r.box)
            assert it.mask[y1:y2, x1:x2].any()
            covered[y1:y2, x1:x2] = True
        lab, _ = ndimage.label(it.mask, structure=np.ones((3, 3)))
        big = [k for k, n in enumerate(np.bincount(lab.ravel())) if k and n >= 16]
        assert covered[np.isin(lab, big)].all()

    why = {r.item: r.reason for r in rejects}
    assert len(items) + len(rejects) == 8
    assert why["images/ISIC_0000002.jpg"] == ("images/ISIC_0000002.jpg: image is 128x128 but its mask "
                                              "masks/ISIC_0000002_segmentation.png is 128x100")
    assert "images/ISIC_0000003.jpg: mask is empty" in why["images/ISIC_0000003.jpg"]
    assert "images/ISIC_0000010.jpg: no mask found (expected masks/ISIC_0000010_segmentation.png)" \
        == why["images/ISIC_0000010.jpg"]
    assert "masks/ISIC_0000011_segmentation.png: mask has no matching image" in \
        why["masks/ISIC_0000011_segmentation.png"]
    assert "images/ISIC_0000012.png" in why["images/ISIC_0000012.png"]
    assert "truncated" in why["images/ISIC_0000012.png"]
    assert "images/README.txt: not an image file (.txt)" == why["images/README.txt"]


def test_missing_label_map_and_threshold(tmp_path, ihc_tiles):
    root = tmp_path / "isic"
    _isic(root, ihc_tiles[:2])
    items, rejects = run(root, options={"mask_suffix": "_segmentation", "binary_threshold": 128})
    assert not items and len(rejects) == 2
    assert all("mask value 1 in masks/ISIC" in r.reason and "has no label; set label_map" in r.reason
               for r in rejects)
    items, rejects = run(root, label_map=DAB, options={"mask_suffix": "_segmentation"})
    assert not items and all("mask value 255" in r.reason and "binary_threshold" in r.reason for r in rejects)


@pytest.fixture(scope="module")
def fundus() -> tuple[np.ndarray, np.ndarray]:
    """A 200 px fundus crop and its label map: 1 = retinal vessel (dark thin structures), 2 = bright lesion
    or disc (brightest 1 % of the smoothed image)."""
    img = data.retina()[500:900, 200:600][::2, ::2].copy()
    green = img[..., 1].astype(float)
    vessels = black_tophat(green, disk(5)) > 12
    bright = ndimage.gaussian_filter(green, 2) > np.percentile(ndimage.gaussian_filter(green, 2), 99)
    labels = np.zeros(green.shape, np.uint8)
    labels[vessels] = 1
    labels[bright] = 2
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    return img, labels


def test_multilabel_palette_and_unknown_value(tmp_path, fundus):
    img, labels = fundus
    root = tmp_path / "fundus"
    (root / "img").mkdir(parents=True)
    (root / "lbl").mkdir(parents=True)
    Image.fromarray(img).save(root / "img" / "eye_01.png")
    pal = Image.fromarray(labels, "P")
    pal.putpalette([0, 0, 0, 200, 30, 30, 250, 250, 0] + [0] * (256 * 3 - 9))
    pal.save(root / "lbl" / "eye_01.png")
    base = {"images_dir": "img", "masks_dir": "lbl"}
    items, rejects = run(root, label_map={"1": "retinal vessel"}, options=base)
    assert not items and rejects[0].reason == ("img/eye_01.png: mask value 2 in lbl/eye_01.png has no label; "
                                               "set label_map (or options.binary_threshold for 0/255 masks)")
    names = {"1": "retinal vessel", "2": "bright region"}
    items, rejects = run(root, label_map=names, options={**base, "per_component": False})
    assert not rejects and len(items) == 1
    it = items[0]
    assert it.labels == ["bright region", "retinal vessel"] and [r.label for r in it.regions] == [
        "retinal vessel", "bright region"]
    assert it.regions[1].area == int((labels == 2).sum())
    # the same labels as an RGB colour mask mapped with options.colors
    Image.fromarray(np.asarray(pal.convert("RGB"))).save(root / "lbl" / "eye_01.png")
    items2, rejects2 = run(root, label_map=names, options={**base, "per_component": False,
                                                           "colors": {"#c81e1e": 1, "250,250,0": 2}})
    assert not rejects2 and np.array_equal(items2[0].mask, it.mask)
    _, rejects3 = run(root, label_map=names, options={**base, "colors": {"#c81e1e": 1}})
    assert "mask colours #fafa00 are not in options.colors" in rejects3[0].reason
    _, rejects4 = run(root, label_map=names, options=base)
    assert "colour mask" in rejects4[0].reason and "options.colors" in rejects4[0].reason


def test_kvasir_seg_jpeg_masks(tmp_path, ihc_tiles):
    """Kvasir-SEG ships masks as RGB JPEGs (gray content with compression noise)."""
    root = tmp_path / "kvasir-seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    tile, mask = ihc_tiles[0]
    Image.fromarray(tile).save(root / "images" / "cju0qkwl35piu0993l0dewei2.jpg")
    Image.fromarray(np.dstack([mask] * 3)).save(root / "masks" / "cju0qkwl35piu0993l0dewei2.jpg", quality=90)
    items, rejects = run(root, label_map={"1": "polyp-like stain"}, options={"binary_threshold": 128,
                                                                             "min_region_size": 40})
    assert not rejects and len(items) == 1
    agree = (items[0].mask == (mask >= 128)).mean()
    assert agree > 0.97 and all(r.area >= 40 for r in items[0].regions)


def test_images_and_masks_in_one_folder(tmp_path, ihc_tiles):
    root = tmp_path / "shared"
    (root / "data").mkdir(parents=True)
    for i, (tile, mask) in enumerate(ihc_tiles[:2]):
        Image.fromarray(tile).save(root / "data" / f"slide{i}.png")
        Image.fromarray(mask).save(root / "data" / f"slide{i}_mask.png")
    Image.fromarray(ihc_tiles[2][0]).save(root / "data" / "slide2.png")
    opts = {"images_dir": "data", "masks_dir": "data", "binary_threshold": 128}
    items, rejects = run(root, label_map=DAB, options={**opts, "mask_suffix": "_mask"})
    assert [i.source_file for i in items] == ["data/slide0.png", "data/slide1.png"]
    assert [r.reason for r in rejects] == ["data/slide2.png: no mask found (expected data/slide2_mask.*)"]
    items, rejects = run(root, label_map=DAB, options=opts)
    assert not items and "set options.mask_suffix" in rejects[0].reason
