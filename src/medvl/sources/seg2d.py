"""2D segmentation: an image folder plus a mask folder (ISIC skin lesions, Kvasir-SEG, many others).

``images_dir/<sub>/<stem>.<ext>`` pairs with ``masks_dir/<sub>/<stem><mask_suffix><mask_ext>`` (ISIC:
``ISIC_0000000.jpg`` <-> ``ISIC_0000000_segmentation.png`` with ``mask_suffix: _segmentation``). Mask
values are named by the recipe's ``label_map`` (``{"1": "melanoma lesion"}``; values named "background"
are ignored). Masks stored as 0/255 (or JPEG-compressed gray) take ``binary_threshold`` (pixels >= it
become 1); colour masks take ``colors`` (``{"#ff0000": 1}`` or ``{"255,0,0": 1}``); a colour mask whose
channels agree within a few levels is read as gray. There is no default label: a mask value without a
label_map entry rejects the item, naming the values ("mask value 1 has no label; set label_map").

Rejects: image without mask, mask without image, non-image files, unreadable files, image/mask size
mismatch (both sizes named), empty mask, no region of at least ``min_region_size`` pixels, unknown mask
values or colours. Each item carries the label map (``Item.mask``), ``mask_values`` and one region per
connected component (``per_component``) or per label."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import Field, field_validator

from medvl.core.records import Reject
from medvl.imaging.boxes import mask_to_regions
from medvl.io.raster import (RasterReadError, colors_to_labels, is_probably_image, parse_color,
                             read_mask, read_raster)
from medvl.sources.base import SOURCES, Item, Source, SourceOptions, Unit

_GRAY_TOLERANCE = 8  # max channel difference for an RGB mask to count as gray (JPEG chroma noise)


class Seg2dOptions(SourceOptions):
    """Options of the ``seg2d`` source."""

    images_dir: str = Field("images", description="folder of the images, relative to the source path")
    masks_dir: str = Field("masks", description="folder of the masks (same sub-folders and stems as the images)")
    mask_suffix: str = Field("", description="added to the image stem to name its mask (ISIC: '_segmentation')")
    mask_ext: str | None = Field(None, description="mask file extension, e.g. '.png'; null = any image extension "
                                 "(first found, sorted order)")
    binary_threshold: int | None = Field(None, ge=1, description="masks stored as 0/255 or JPEG gray: pixels >= "
                                         "this become value 1")
    colors: dict[str, int] = Field({}, description="colour masks: colour ('#ff0000' or '255,0,0') -> mask value")
    min_region_size: int = Field(16, ge=1, description="smallest region (pixels) that becomes a box")
    per_component: bool = Field(True, description="one box per connected component (false: one box per label)")

    @field_validator("colors")
    @classmethod
    def _colors(cls, v: dict[str, int]) -> dict[str, int]:
        for k in v:
            parse_color(k)
        return v

    @field_validator("mask_ext")
    @classmethod
    def _dot(cls, v: str | None) -> str | None:
        return v if v is None or v.startswith(".") else "." + v


def _fmt_values(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:10])
    return shown + (f" (+{len(values) - 10} more)" if len(values) > 10 else "")


@SOURCES.register("seg2d")
class Seg2dSource(Source):
    """One unit per image/mask pair; regions from the mask's connected components."""

    task = "seg"
    Options = Seg2dOptions
    opts: Seg2dOptions

    def _mask_stem(self, image_rel: Path) -> Path:
        return image_rel.with_name(image_rel.stem + self.opts.mask_suffix)

    def units(self) -> Iterator[Unit | Reject]:
        img_dir, mask_dir = self.root / self.opts.images_dir, self.root / self.opts.masks_dir
        for d, what in ((img_dir, "images_dir"), (mask_dir, "masks_dir")):
            if not d.is_dir() or not self.inside_root(d):
                yield self.reject(self.opts.images_dir if what == "images_dir" else self.opts.masks_dir,
                                  f"{d.name}: {what} folder not found inside the dataset folder")
                return
        shared = img_dir.resolve() == mask_dir.resolve()
        if shared and not self.opts.mask_suffix:
            yield self.reject(self.opts.masks_dir, f"{self.opts.masks_dir}: images_dir and masks_dir are the same "
                                                   "folder; set options.mask_suffix to tell masks from images")
            return
        img_in_mask, mask_in_img = self._under(img_dir, mask_dir), self._under(mask_dir, img_dir)
        masks: dict[str, str] = {}  # mask path without extension (relative to masks_dir) -> rel to root
        mask_files: list[str] = []
        for p in sorted(mask_dir.rglob("*")):
            if not p.is_file():
                continue
            if (shared and not self._is_mask(p)) or (img_in_mask and self._under(p, img_dir)):
                continue  # an image: listed below
            rel = p.relative_to(self.root).as_posix()
            if self._is_mask(p):
                mask_files.append(rel)
                masks.setdefault(p.relative_to(mask_dir).with_suffix("").as_posix(), rel)  # sorted: first wins
            else:
                yield self.reject(rel, f"{rel}: not a mask file ({p.name} does not match "
                                       f"*{self.opts.mask_suffix}{self.opts.mask_ext or '.<image ext>'})")
        used: set[str] = set()
        for p in sorted(img_dir.rglob("*")):
            if not p.is_file() or (shared and self._is_mask(p)) or (mask_in_img and self._under(p, mask_dir)):
                continue  # a mask (or junk among the masks): listed above
            rel = p.relative_to(self.root).as_posix()
            if not is_probably_image(p):
                yield self.reject(rel, f"{rel}: not an image file ({p.suffix or 'no extension'})")
                continue
            stem = self._mask_stem(p.relative_to(img_dir).with_suffix("")).as_posix()
            mask_rel = masks.get(stem)
            if mask_rel is None:
                want = stem + (self.opts.mask_ext or ".*")
                yield self.reject(rel, f"{rel}: no mask found (expected {self.opts.masks_dir}/{want})")
                continue
            used.add(mask_rel)
            yield Unit(key=rel, payload={"mask": mask_rel})
        for rel in mask_files:
            if rel not in used:
                yield self.reject(rel, f"{rel}: mask has no matching image in {self.opts.images_dir}/")

    def _is_mask(self, p: Path) -> bool:
        """A file under masks_dir with an image extension (``mask_ext`` if set) and the ``mask_suffix``."""
        if not is_probably_image(p):
            return False
        if self.opts.mask_ext and p.suffix.lower() != self.opts.mask_ext.lower():
            return False
        return not self.opts.mask_suffix or p.stem.endswith(self.opts.mask_suffix)

    @staticmethod
    def _under(p: Path, folder: Path) -> bool:
        return folder.resolve() in p.resolve().parents

    def _label_map(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for k, v in self.cfg.label_map.items():
            try:
                out[int(k)] = v
            except ValueError:
                continue
        return out

    def _to_labels(self, mask: np.ndarray, mask_rel: str) -> tuple[np.ndarray | None, str | None]:
        """Stored mask -> 2D integer label map, or (None, problem)."""
        if mask.ndim == 3:
            if self.opts.colors:
                table = {parse_color(k): v for k, v in self.opts.colors.items()}
                labels, unknown = colors_to_labels(mask, table)
                if unknown:
                    shown = ", ".join("#%02x%02x%02x" % c for c in unknown[:5])
                    more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
                    return None, f"{mask_rel}: mask colours {shown}{more} are not in options.colors"
                return labels, None
            diff = int(np.abs(mask.astype(np.int16) - mask[..., :1].astype(np.int16)).max())
            if diff > _GRAY_TOLERANCE:
                return None, f"{mask_rel}: colour mask (channels differ); set options.colors"
            mask = np.rint(mask.astype(np.float32).mean(axis=2)).astype(np.int32)
        if self.opts.binary_threshold is not None:
            mask = (mask >= self.opts.binary_threshold).astype(np.int32)
        return mask, None

    def load(self, unit: Unit) -> Iterator[Item | Reject]:
        key, mask_rel = unit.key, unit.payload["mask"]
        try:
            image = read_raster(self.root / key)
        except RasterReadError as e:
            yield self.reject(key, f"{key}: {e.problem}")
            return
        try:
            stored = read_mask(self.root / mask_rel)
        except RasterReadError as e:
            yield self.reject(key, f"{mask_rel} (mask of {key}): {e.problem}")
            return
        if stored.shape[:2] != image.shape[:2]:
            (ih, iw), (mh, mw) = image.shape[:2], stored.shape[:2]
            yield self.reject(key, f"{key}: image is {iw}x{ih} but its mask {mask_rel} is {mw}x{mh}",
                              stage="validate")
            return
        mask, problem = self._to_labels(stored, mask_rel)
        if mask is None:
            yield self.reject(key, f"{key}: {problem}", stage="validate")
            return
        present = sorted(int(v) for v in np.unique(mask) if v != 0)
        if not present:
            yield self.reject(key, f"{key}: mask is empty ({mask_rel} has no non-zero pixel)", stage="validate")
            return
        names = self._label_map()
        missing = [v for v in present if v not in names]
        if missing:
            noun = "value" if len(missing) == 1 else "values"
            verb = "has" if len(missing) == 1 else "have"
            yield self.reject(key, f"{key}: mask {noun} {_fmt_values(missing)} in {mask_rel} {verb} no label; "
                                   "set label_map" + ("" if self.opts.binary_threshold else
                                                      " (or options.binary_threshold for 0/255 masks)"),
                              stage="validate")
            return
        regions = mask_to_regions(mask, names, min_size=self.opts.min_region_size,
                                  per_component=self.opts.per_component)
        if not regions:
            if all(names[v].lower() == "background" for v in present):
                reason = f"{key}: mask is empty (only background values in {mask_rel})"
            else:
                reason = f"{key}: no region of at least {self.opts.min_region_size} pixels in {mask_rel}"
            yield self.reject(key, reason, stage="validate")
            return
        top = max(present)
        dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32
        values = {v: names[v] for v in present if names[v].lower() != "background"}
        yield Item(array=image, source_file=key, labels=sorted({r.label for r in regions}), regions=regions,
                   mask=mask.astype(dtype), mask_values=values)
