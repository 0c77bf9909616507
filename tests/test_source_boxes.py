"""Detection sources: COCO JSON (``coco``) and box tables (``csv_boxes``, NIH ``BBox_List_2017.csv`` with its
exact header), on real fundus / pathology / MR images with boxes measured from the images themselves."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from dipy.data import get_fnames
from PIL import Image
from scipy import ndimage
from skimage import data
from skimage.color import rgb2hed

from medvl.core.records import Reject
from medvl.pipeline.recipe import SourceConfig
from medvl.sources import SOURCES, Item


def run(fmt: str, root: Path, **cfg) -> tuple[list[Item], list[Reject]]:
    config = SourceConfig(name="det", format=fmt, path=str(root), **cfg)
    src = SOURCES.get(fmt)(config)
    units, rejects, items = [], [], []
    for u in src.units():
        (rejects if isinstance(u, Reject) else units).append(u)
    worker = SOURCES.get(fmt)(pickle.loads(pickle.dumps(config)))
    for u in units:
        for out in worker.load(pickle.loads(pickle.dumps(u))):
            (items if isinstance(out, Item) else rejects).append(out)
    return items, rejects


def _largest_box(binary: np.ndarray) -> list[float]:
    """[x, y, w, h] of the largest connected component."""
    lab, n = ndimage.label(binary)
    assert n > 0
    biggest = 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    ys, xs = np.nonzero(lab == biggest)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@pytest.fixture(scope="module")
def fundus() -> tuple[np.ndarray, list[float]]:
    """Fundus photo (353 px) and the box of its optic disc (the brightest blob of the smoothed image)."""
    img = data.retina()[::4, ::4].copy()
    lum = ndimage.gaussian_filter(img.mean(axis=2), 3)
    return img, _largest_box(lum > np.percentile(lum, 99.5))


@pytest.fixture(scope="module")
def ihc() -> tuple[np.ndarray, list[float]]:
    """IHC tile (256 px) and the box of its largest DAB-positive (brown) region."""
    img = data.immunohistochemistry()[:256, :256].copy()
    dab = ndimage.gaussian_filter(rgb2hed(img)[..., 2], 2)
    return img, _largest_box(dab > np.percentile(dab, 97))


def test_coco(tmp_path, fundus, ihc):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    f_img, f_box = fundus
    i_img, i_box = ihc
    Image.fromarray(f_img).save(root / "images" / "fundus.png")
    Image.fromarray(i_img).save(root / "images" / "ihc.jpg", quality=92)
    Image.fromarray(data.microaneurysms()).save(root / "images" / "micro.png")
    Image.fromarray(i_img[:128, :128]).save(root / "images" / "bare.png")
    fh, fw = f_img.shape[:2]
    x, y, w, h = i_box
    poly = [x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h - 1, x + 1, y + h / 2]  # diamond inside the box
    coco = {
        "images": [
            {"id": 1, "file_name": "fundus.png", "width": fw, "height": fh},
            {"id": 2, "file_name": "ihc.jpg", "width": 256, "height": 256},
            {"id": 3, "file_name": "micro.png", "width": 512, "height": 512},  # file is 102x102
            {"id": 4, "file_name": "bare.png", "width": 128, "height": 128},
            {"id": 5, "file_name": "gone.png", "width": 64, "height": 64},
            {"id": 6, "file_name": "../../../etc/passwd", "width": 64, "height": 64},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": f_box, "area": f_box[2] * f_box[3], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [fw - 10, 5, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 9, "bbox": f_box, "area": 1, "iscrowd": 0},
            {"id": 20, "image_id": 2, "category_id": 2, "bbox": i_box, "area": w * h, "iscrowd": 0,
             "segmentation": [poly]},
            {"id": 21, "image_id": 2, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 1},
            {"id": 22, "image_id": 2, "category_id": 2, "bbox": [10, 10, 0, 12], "area": 0, "iscrowd": 0},
            {"id": 30, "image_id": 3, "category_id": 1, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 40, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "optic disc"}, {"id": 2, "name": "DAB-positive region"}],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    opts = {"annotations": "instances.json", "images_dir": "images"}
    items, rejects = run("coco", root, options=opts)
    got = {i.source_file: i for i in items}
    assert sorted(got) == ["images/fundus.png", "images/ihc.jpg"]
    fx = got["images/fundus.png"]
    assert fx.labels == ["optic disc"] and len(fx.regions) == 1
    assert fx.regions[0].box == (f_box[0], f_box[1], f_box[0] + f_box[2], f_box[1] + f_box[3])
    assert fx.regions[0].source == "box" and fx.array.shape == f_img.shape
    assert got["images/ihc.jpg"].labels == ["DAB-positive region"]
    assert got["images/ihc.jpg"].regions[0].box == (x, y, x + w, y + h)

    why = {r.item: r for r in rejects}
    assert f"lies outside the {fw}x{fh} image" in why["images/fundus.png#ann11"].reason
    assert "unknown category id 9" in why["images/fundus.png#ann12"].reason
    assert why["images/ihc.jpg#ann21"].stage == "filter" and "crowd" in why["images/ihc.jpg#ann21"].reason
    assert "non-positive size" in why["images/ihc.jpg#ann22"].reason
    assert "listed as 512x512 in instances.json but the file is 102x102" in why["images/micro.png"].reason
    assert "images/bare.png: no annotations" == why["images/bare.png"].reason
    assert "images/gone.png: file not found" in why["images/gone.png"].reason
    assert any("passwd" in r.reason and "escapes the dataset folder" in r.reason for r in rejects)
    assert any("unknown image id 77" in r.reason for r in rejects)
    assert all(r.item.split("#")[0] in r.reason or r.item.startswith("instances.json") for r in rejects)
    assert len(rejects) == 9

    # polygon extent instead of bbox; crowd kept; unannotated images kept
    items, rejects = run("coco", root, options={**opts, "use_segmentation": True, "skip_crowd": False,
                                                 "keep_unannotated": True})
    got = {i.source_file: i for i in items}
    ihc_boxes = [r.box for r in got["images/ihc.jpg"].regions]
    assert (x + 1, y, x + w, y + h - 1) in ihc_boxes and len(ihc_boxes) == 2
    assert got["images/bare.png"].regions == [] and got["images/bare.png"].labels == []


def test_coco_bad_json(tmp_path):
    (tmp_path / "annotations.json").write_text('{"images": [], "annotations": ')
    items, rejects = run("coco", tmp_path)
    assert not items and len(rejects) == 1 and "annotations.json: not valid JSON" in rejects[0].reason
    (tmp_path / "annotations.json").write_text('{"images": []}')
    items, rejects = run("coco", tmp_path)
    assert "key 'annotations' missing" in rejects[0].reason


NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return np.rint(np.load(get_fnames(name="t1_coronal_slice")) * 255).astype(np.uint8)  # 256x256


def test_nih_bbox_list(tmp_path, t1):
    root = tmp_path / "nih"
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "images_002" / "images").mkdir(parents=True)
    Image.fromarray(t1).save(root / "images_001" / "images" / "00013118_008.png")
    Image.fromarray(t1[::-1].copy()).save(root / "images_002" / "images" / "00014716_007.png")
    Image.fromarray(t1.T.copy()).save(root / "images_002" / "images" / "00029817_009.png")
    rows = [
        "00013118_008.png,Atelectasis,125.084745762712,147.019216763771,86.7796610169491,79.1864406779661",
        "00014716_007.png,Atelectasis,6.72677966101695,14.5355932203389,61.4101694915254,81.7355932203389",
        "00013118_008.png,Mass,30.0,40.5,20.25,18.0,,,",
        "00013118_008.png,Nodule,240.0,200.0,60.0,30.0",
        "00029817_009.png,Effusion,12.5,abc,10,10",
        "../../etc/passwd,Mass,1,1,2,2",
        "00030000_000.png,Mass,1,1,2,2",
    ]
    (root / "BBox_List_2017.csv").write_text(NIH_BBOX_HEADER + "\n" + "\n".join(rows) + "\n")
    items, rejects = run("csv_boxes", root, options={"search_subdirs": True, "patient_pattern": r"^(\d+)_"})
    got = {i.source_file: i for i in items}
    assert sorted(got) == ["images_001/images/00013118_008.png", "images_002/images/00014716_007.png"]
    a = got["images_001/images/00013118_008.png"]
    assert a.labels == ["Atelectasis", "Mass"] and a.patient_raw == "00013118"
    assert [r.label for r in a.regions] == ["Atelectasis", "Mass"]
    assert a.regions[1].box == (30.0, 40.5, 50.25, 58.5)
    assert a.regions[0].box == pytest.approx((125.0847, 147.0192, 211.8644, 226.2057), abs=1e-3)

    why = {r.item: r.reason for r in rejects}
    assert "lies outside the 256x256 image" in why["images_001/images/00013118_008.png#row5"]
    assert "are not numbers" in why["images_002/images/00029817_009.png#row6"]
    assert "no valid box left" in why["images_002/images/00029817_009.png"]
    assert any("'../../etc/passwd'" in r and "path escapes the dataset folder" in r for r in why.values())
    assert any("00030000_000.png" in r and "file not found" in r for r in why.values())
    assert len(rejects) == 5


def test_generic_xyxy_table(tmp_path, t1):
    root = tmp_path / "generic"
    (root / "png").mkdir(parents=True)
    Image.fromarray(t1).save(root / "png" / "case7.png")
    np.save(root / "png" / "case8.npy", t1.astype(np.float32) / 255)
    (root / "boxes.csv").write_text("path,cls,x1,y1,x2,y2\ncase7.png,ventricle,100,90,150,140\n"
                                    "case8.npy,ventricle,10,10,5,40\ncase8.npy,cortex,0,0,256,256\n")
    items, rejects = run("csv_boxes", root, label_map={"cortex": "cerebral cortex"},
                         options={"csv": "boxes.csv", "image_column": "path", "label_column": "cls",
                                  "box_columns": ["x1", "y1", "x2", "y2"], "box_format": "xyxy",
                                  "images_dir": "png"})
    assert [(i.source_file, i.labels, [r.box for r in i.regions]) for i in items] == [
        ("png/case7.png", ["ventricle"], [(100.0, 90.0, 150.0, 140.0)]),
        ("png/case8.npy", ["cerebral cortex"], [(0.0, 0.0, 256.0, 256.0)]),
    ]
    assert items[1].array.dtype == np.uint8 and items[1].patient_raw is None
    assert len(rejects) == 1 and "png/case8.npy row 3: box [10, 10, 5, 40] has a non-positive size" \
        == rejects[0].reason
    with pytest.raises(ValueError, match="box_columns"):
        SourceConfig(name="x", format="csv_boxes", path=str(root), options={"box_columns": ["x", "y"]})
