"""Detection boxes from a COCO JSON file (``images``, ``annotations``, ``categories``).

``images[i]`` = {id, file_name, width, height}; ``annotations[j]`` = {id, image_id, category_id,
bbox [x, y, w, h] in pixels, area, iscrowd, optional segmentation polygons}; ``categories[k]`` = {id, name}.
One unit per image with its annotations in the payload. Checks: the listed width/height must match the
file (else the image is rejected naming both sizes); a box outside the image or with a non-positive size,
an unknown category, a crowd annotation (``skip_crowd``) -> a Reject for that annotation
(``file#ann<id>``) while the image keeps its good boxes; an image left with no valid box is rejected;
an image with no annotations is rejected unless ``keep_unannotated``.

``box_problem`` / ``boxes_item`` are shared with ``csv_boxes``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from medvl.core.records import Region, Reject
from medvl.imaging.boxes import box_inside, clip_box
from medvl.io.raster import RasterReadError, read_raster
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit


def box_problem(xyxy: Sequence[float], width: int, height: int) -> str | None:
    """Why a pixel xyxy box is unusable in a ``width`` x ``height`` image, or None when it is fine."""
    if len(xyxy) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in xyxy):
        return f"box {list(xyxy)} is not four finite numbers"
    x1, y1, x2, y2 = xyxy
    if x2 <= x1 or y2 <= y1:
        return f"box {_fmt(xyxy)} has a non-positive size"
    if not box_inside(xyxy, width, height):
        return f"box {_fmt(xyxy)} lies outside the {width}x{height} image"
    return None


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def boxes_item(source: Source, key: str, array: Any, boxes: list[dict[str, Any]], tag: str
               ) -> Iterator[Item | Reject]:
    """Validate ``boxes`` ({"n", "label", "xyxy"} or {"n", "problem"}) against ``array``; yield a Reject
    per bad box (``key#<tag><n>``) and the Item with the good ones (or a Reject if none is left)."""
    height, width = array.shape[:2]
    regions: list[Region] = []
    bad = 0
    for b in boxes:
        problem = b.get("problem") or box_problem(b["xyxy"], width, height)
        if problem:
            bad += 1
            yield source.reject(f"{key}#{tag}{b['n']}", f"{key} {tag} {b['n']}: {problem}", stage="validate")
            continue
        regions.append(Region(label=b["label"], box=clip_box(b["xyxy"], width, height), source="box"))
    if not regions:
        yield source.reject(key, f"{key}: no valid box left ({bad} rejected)", stage="validate")
        return
    yield Item(array=array, source_file=key, labels=sorted({r.label for r in regions}), regions=regions)


def _id_order(v: Any) -> tuple[int, float, str]:
    """Sort key for COCO ids: numbers numerically, then anything else as text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


class CocoOptions(SourceOptions):
    """Options of the ``coco`` source."""

    annotations: str = "annotations.json"  # relative to the dataset root
    images_dir: str = ""  # folder of the images, relative to the root
    use_segmentation: bool = False  # box = extent of the segmentation polygons instead of bbox
    skip_crowd: bool = True  # iscrowd=1 annotations become rejects (stage "filter")
    keep_unannotated: bool = False  # keep images without annotations as unlabelled items


class CocoError(ValueError):
    """A COCO file that cannot be used at all."""


def _load_coco(path: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CocoError(f"{name}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CocoError(f"{name}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CocoError(f"{name}: expected a JSON object with images/annotations/categories")
    for k in ("images", "annotations", "categories"):
        if not isinstance(data.get(k), list):
            raise CocoError(f"{name}: key {k!r} missing or not a list")
    return data


@SOURCES.register("coco")
class CocoSource(Source):
    """One unit per listed image; regions = its valid boxes."""

    task = "det"
    Options = CocoOptions
    opts: CocoOptions

    def units(self) -> Iterator[Unit | Reject]:
        name = self.opts.annotations
        try:
            data = _load_coco(self.root / name, name)
        except CocoError as e:
            yield self.reject(name, str(e))
            return
        cats: dict[Any, str] = {}
        for c in data["categories"]:
            if isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str):
                cats[c["id"]] = self.cfg.label_map.get(c["name"], c["name"])
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for a in data["annotations"]:
            if isinstance(a, dict) and "image_id" in a:
                by_image.setdefault(a["image_id"], []).append(a)
            else:
                yield self.reject(f"{name}#annotation", f"{name}: annotation without image_id: {str(a)[:80]}",
                                  stage="validate")
        images_dir = self.root / self.opts.images_dir
        seen_ids: set[Any] = set()
        entries = [im for im in data["images"] if isinstance(im, dict)]
        for im in sorted(entries, key=lambda im: (str(im.get("file_name", "")), str(im.get("id")))):
            fname, img_id = im.get("file_name"), im.get("id")
            if not isinstance(fname, str) or not fname or img_id is None:
                yield self.reject(f"{name}#image{img_id}", f"{name}: image entry {img_id} lacks id or file_name",
                                  stage="validate")
                continue
            path = images_dir / fname
            if not self.inside_root(path):
                yield self.reject(f"{name}#image{img_id}", f"{name}: image {fname!r}: path escapes the dataset folder")
                continue
            key = self.rel(path)
            if img_id in seen_ids:
                yield self.reject(key, f"{key}: image id {img_id} listed twice in {name}", stage="validate")
                continue
            seen_ids.add(img_id)
            if not path.is_file():
                yield self.reject(key, f"{key}: file not found (listed in {name})")
                continue
            anns = []
            for a in sorted(by_image.get(img_id, []), key=lambda a: _id_order(a.get("id"))):
                anns.append({"id": a.get("id"), "label": cats.get(a.get("category_id")),
                             "category_id": a.get("category_id"), "bbox": a.get("bbox"),
                             "iscrowd": bool(a.get("iscrowd", 0)), "segmentation": a.get("segmentation")})
            yield Unit(key=key, payload={"width": im.get("width"), "height": im.get("height"), "anns": anns})
        known_ids = {im.get("id") for im in entries}
        for img_id in sorted((i for i in by_image if i not in known_ids), key=_id_order):
            n = len(by_image[img_id])
            yield self.reject(f"{name}#image{img_id}", f"{name}: {n} annotation(s) refer to unknown image id "
                                                       f"{img_id}", stage="validate")

    def _box(self, ann: dict[str, Any]) -> tuple[list[float] | None, str | None]:
        """Pixel xyxy from an annotation, or (None, problem)."""
        seg = ann.get("segmentation")
        if self.opts.use_segmentation and isinstance(seg, list) and seg:
            try:
                xs = [float(v) for poly in seg for v in poly[0::2]]
                ys = [float(v) for poly in seg for v in poly[1::2]]
            except (TypeError, ValueError):
                return None, "segmentation is not a list of polygons"
            if not xs or not ys:
                return None, "segmentation polygons are empty"
            return [min(xs), min(ys), max(xs), max(ys)], None
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            return None, f"bbox {bbox!r} is not [x, y, w, h]"
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            return None, f"bbox {bbox!r} is not numeric"
        return [x, y, x + w, y + h], None

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        key, p = unit.key, unit.payload
        try:
            array = read_raster(self.root / key)
        except RasterReadError as e:
            yield self.reject(key, f"{key}: {e.problem}")
            return
        height, width = array.shape[:2]
        lw, lh = p.get("width"), p.get("height")
        if (lw is not None and lw != width) or (lh is not None and lh != height):
            yield self.reject(key, f"{key}: listed as {lw}x{lh} in {self.opts.annotations} but the file is "
                                   f"{width}x{height}", stage="validate")
            return
        if not p["anns"]:
            if self.opts.keep_unannotated:
                yield Item(array=array, source_file=key)
            else:
                yield self.reject(key, f"{key}: no annotations", stage="validate")
            return
        boxes: list[dict[str, Any]] = []
        for a in p["anns"]:
            n = a["id"]
            if a["iscrowd"] and self.opts.skip_crowd:
                yield self.reject(f"{key}#ann{n}", f"{key} ann {n}: crowd annotation skipped (options.skip_crowd)",
                                  stage="filter")
                continue
            if a["label"] is None:
                boxes.append({"n": n, "problem": f"unknown category id {a['category_id']!r}"})
                continue
            xyxy, problem = self._box(a)
            boxes.append({"n": n, "label": a["label"], "xyxy": xyxy} if xyxy else {"n": n, "problem": problem})
        if not boxes:
            yield self.reject(key, f"{key}: no annotation left after skipping crowd annotations", stage="filter")
            return
        yield from boxes_item(self, key, array, boxes, tag="ann")
